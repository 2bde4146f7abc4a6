"""The core FIVE claim on the embedded glyph zoo (slow: pre-trains a tiny zoo, meta-trains).

A generator meta-trained over training teachers, adapted k = 5 steps to an *unseen* teacher,
gives recovered images that the teacher classifies as their targets far more often than a
freshly initialised generator after the same 5 steps (docs/algorithm.md §2.1, §7).

Scale: 16 px glyphs, 6 Conv4-16 teachers (4 for meta-training, 2 unseen), Reptile, 150
meta-iterations, accuracy = mean over 8 adaptation draws on the unseen teachers' clean images.
The crop padding is the paper's 4 px at 32 px scaled to 16 px (2 px): at 4 px on 16 px images
(a quarter of the side) the per-step crops of these crop-free-trained teachers dominate and the
margin was small (+0.025 to +0.116); with no crop at all both generators reach 1.00 in 5 steps
(nothing to measure). FOMAML at these settings gave no gain (0.725 vs 0.738); the paper's lr 1e-3
for both loops gains only +0.04 in 300 meta-iterations (0.656 vs 0.619), which is why the
learning rates are larger here.

Measured on 2026-12-07 with the code's defaults then (FIVE's steps scanned, teachers mapped with
``lax.map`` on CPU) and this test's settings, for zoo seeds 0-3 (the pre-training key), teacher
accuracy of meta vs fresh after 150 meta-iterations (error-rate ratio):

  seed 0: 0.834 vs 0.722 (0.60×)   seed 1: 0.803 vs 0.722 (0.71×)
  seed 2: 0.869 vs 0.797 (0.65×)   seed 3: 0.859 vs 0.728 (0.52×)

After 300 meta-iterations seed 0 gave 0.828 vs 0.722 (0.62×): no better, so the test stopped at
150 (the earlier unrolled code gave 0.853 at 150 and 0.856 at 300, also level). The
meta-generator wins by 7.2-13.1 points for every seed; seed 1 misses this test's second bound
(errors ≤ 0.7× the fresh generator's) here as it did at 300 meta-iterations with the earlier
code (0.80×). The test runs seed 0. Alone on this 2-core CPU: pre-training 20-22 s, the
meta-iteration's compile 8-10 s, 150 meta-iterations 18 s (300: 33 s), the evaluation 5 s.
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
META_ITERATIONS = 150


@pytest.mark.slow
@pytest.mark.optimised     # 150 meta-iterations of one program: compute-bound
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
