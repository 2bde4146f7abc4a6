"""The core FIVE claim on the embedded glyph zoo (slow: pre-trains a tiny zoo, meta-trains).

A generator meta-trained over training teachers, adapted k = 5 steps to an *unseen* teacher,
should give recovered images that the teacher classifies as their targets more often than a
freshly initialised generator after the same 5 steps (SPEC §2.1, §7).

What holds at this scale (Conv4 without conv bias before BN, Reptile, 300 meta-iterations,
mean over 8 adaptation draws on the 2 unseen teachers): the meta-generator wins for every zoo
seed tried, by a modest margin — meta vs fresh 0.672/0.584, 0.550/0.525, 0.591/0.516,
0.663/0.547 for zoo seeds 0-3 (+0.025 to +0.116); FOMAML at the same settings did not (+0.044,
−0.069 for seeds 0-1), and training longer is not reliably better (1000 meta-iterations:
seed 1 +0.069, seed 2 −0.016). The paper's "far more often" is not reached here (open FIVE issue);
this test guards the effect that is reproduced (seed 0: +0.088).
"""
import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from free_jax.data import load_split
from free_jax.inversion import (InversionConfig, adapt_generator, init_generator, invert,
                                meta_update_generator, relative_targets)
from free_jax.zoo.pretrain import pretrain_teachers

# Scaled down for a 2-core CPU: 16 px grey glyphs, Conv4-16 teachers, a small generator, and a
# larger inner/outer learning rate than SPEC's 1e-3 so that a few hundred meta-iterations suffice.
CONFIG = InversionConfig(images_per_class=4, nz=32, ngf=16, flip=False, gen_lr=1e-2, z_lr=1e-2,
                         meta_lr=1e-2, meta_update="reptile",
                         lambda_bn=float(os.environ.get("FIVE_CLAIM_BN", "0")))
META_ITERATIONS = 300


@pytest.mark.slow
def test_meta_generator_recovers_unseen_teacher_better_than_fresh_after_k_steps():
    split = load_split("glyphs", "train", image_size=16, channels=1)
    group, _ = pretrain_teachers(split, "conv4", 6, 5, 40, jax.random.key(0), width=16)
    train = jax.tree_util.tree_map(lambda leaf: leaf[:4], group)
    unseen = jax.tree_util.tree_map(lambda leaf: leaf[4:], group)
    gen_params, gen_opt = init_generator(jax.random.key(1), CONFIG, (16, 16, 1))
    fresh_params = gen_params

    @jax.jit
    def meta_step(gen_params, gen_opt, key):
        result = invert(gen_params, [train], None, key, CONFIG, warmup=True)
        return meta_update_generator(gen_params, gen_opt, result.meta_grad, CONFIG)

    @jax.jit
    def unseen_accuracy(gen_params, key):
        z = jax.random.normal(jax.random.fold_in(key, 0), (unseen.size, CONFIG.batch_size, CONFIG.nz))
        return adapt_generator(gen_params, unseen, z, relative_targets(CONFIG), key,
                               CONFIG).metrics["teacher_acc"]

    for iteration in range(META_ITERATIONS):
        gen_params, gen_opt = meta_step(gen_params, gen_opt, jax.random.key(100 + iteration))
    keys = [jax.random.key(seed) for seed in range(8)]
    meta = np.mean([float(unseen_accuracy(gen_params, key)) for key in keys])
    fresh = np.mean([float(unseen_accuracy(fresh_params, key)) for key in keys])
    print(f"teacher accuracy after k=5 steps on unseen teachers: meta {meta:.3f}, fresh {fresh:.3f}")
    assert meta >= fresh + 0.05
