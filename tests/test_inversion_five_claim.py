"""The core FIVE claim on the embedded glyph zoo (slow: pre-trains a tiny zoo, meta-trains).

A generator meta-trained over training teachers, adapted k = 5 steps to an *unseen* teacher,
gives recovered images that the teacher classifies as their targets far more often than a
freshly initialised generator after the same 5 steps (docs/algorithm.md §2.1, §7).

Scale: 16 px glyphs, 6 Conv4-16 teachers (4 for meta-training, 2 unseen), Reptile, 300
meta-iterations, accuracy = mean over 8 adaptation draws on the unseen teachers' clean images.
The crop padding is the paper's 4 px at 32 px scaled to 16 px (2 px): at 4 px on 16 px images
(a quarter of the side) the per-step crops of these crop-free-trained teachers dominate and the
margin was small (+0.025 to +0.116); with no crop at all both generators reach 1.00 in 5 steps
(nothing to measure). Measured at these settings, meta vs fresh (error rate ratio):

  zoo seed 0: 0.856 vs 0.738 (0.55×)   seed 1: 0.819 vs 0.678 (0.56×)
  zoo seed 2: 0.850 vs 0.775 (0.67×)   seed 3: 0.884 vs 0.722 (0.42×)

(seed 0 is this test; seeds 1-3 ran the same settings with the training teachers' order
shuffled every meta-iteration, which gave 0.869 for seed 0). Those figures are from 2026-11-24;
on 2026-11-30, after the pooling fix (docs/exact_gradients.md), one cross-entropy for the whole
package and the shared warm-up loop (teachers passed as jit arguments), seed 0 measured 0.847 vs
0.750 (0.61×); on 2026-12-06, with the teachers' epochs scanned (``unroll_steps=False``: the same
training up to float noise, compiled faster), 0.856 vs 0.716 (0.51×). The fresh generator's images are
misclassified 1.5-2.4 times as often.

Re-measured on 2026-12-07 with this test's exact settings (training teachers in a fixed order) for
zoo seeds 0-3 (the pre-training key), meta vs fresh after 300 meta-iterations (after 150):

  seed 0: 0.856 vs 0.716 (0.51×; 0.853, 0.52×)   seed 1: 0.781 vs 0.725 (0.80×; 0.800, 0.73×)
  seed 2: 0.881 vs 0.788 (0.56×; 0.859, 0.66×)   seed 3: 0.844 vs 0.728 (0.57×; 0.850, 0.55×)

The meta-generator wins by 5.6-14.0 points for every seed, but seed 1 does not meet this test's
second bound (errors ≤ 0.7× the fresh generator's): the fresh generator errs 1.25-2.0 times as
often. The test runs seed 0. Its cost is mostly compiling and pre-training (about 17 s each on a
quiet CPU; 50 meta-iterations take 3.5-4.3 s), so fewer meta-iterations would save little. FOMAML at the same
settings gave no gain (0.725 vs 0.738); the paper's lr 1e-3 for both loops gains only +0.04 in 300
meta-iterations (0.656 vs 0.619), which is why the learning rates are larger here.
"""
import dataclasses
import os

import jax
import numpy as np
import pytest

from free_jax.benchmarks.inversion import CPU_CLAIM_CONFIG
from free_jax.data import load_split
from free_jax.inversion import adapt_generator, init_generator, meta_train_warmup, relative_targets
from free_jax.zoo.pretrain import pretrain_teachers

# Scaled down for a 2-core CPU (settings shared with the inversion benchmark).
CONFIG = dataclasses.replace(CPU_CLAIM_CONFIG, lambda_bn=float(os.environ.get("FIVE_CLAIM_BN", "0")))
META_ITERATIONS = 300


@pytest.mark.slow
@pytest.mark.optimised     # 300 meta-iterations of one program: compute-bound
def test_meta_generator_recovers_unseen_teacher_better_than_fresh_after_k_steps():
    split = load_split("glyphs", "train", image_size=16, channels=1)
    group, _ = pretrain_teachers(split, "conv4", 6, 5, 40, jax.random.key(0), width=16, unroll_steps=False)
    train = jax.tree_util.tree_map(lambda leaf: leaf[:4], group)
    unseen = jax.tree_util.tree_map(lambda leaf: leaf[4:], group)
    gen_params, gen_opt = init_generator(jax.random.key(1), CONFIG, (16, 16, 1))
    fresh_params = gen_params

    @jax.jit
    def unseen_accuracy(gen_params, key):
        z = jax.random.normal(jax.random.fold_in(key, 0), (unseen.size, CONFIG.batch_size, CONFIG.nz))
        return adapt_generator(gen_params, unseen, z, relative_targets(CONFIG), key,
                               CONFIG).metrics["teacher_acc"]

    gen_params, gen_opt = meta_train_warmup(gen_params, gen_opt, lambda _: [train], META_ITERATIONS, CONFIG,
                                            key_of=lambda iteration: jax.random.key(100 + iteration))
    keys = [jax.random.key(seed) for seed in range(8)]
    meta = np.mean([float(unseen_accuracy(gen_params, key)) for key in keys])
    fresh = np.mean([float(unseen_accuracy(fresh_params, key)) for key in keys])
    print(f"teacher accuracy after k=5 steps on unseen teachers: meta {meta:.3f}, fresh {fresh:.3f}")
    assert meta >= fresh + 0.05
    assert (1 - meta) <= 0.7 * (1 - fresh), "the fresh generator should err at least 1.4× as often"
