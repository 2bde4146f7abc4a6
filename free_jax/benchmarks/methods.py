"""Recovery seconds per teacher of each recovering method: FIVE (k steps), fresh generator (S steps), pixels (S steps).

On a small glyph zoo (Conv4 teachers pre-trained briefly), each recovery of
``free_jax.inversion.recovery`` — the very function the training step calls for
``--config.method=free|fresh_generator|pixel`` — recovers the images of one group of T teachers
in one jitted call, as after warm-up in training (FIVE with its adversarial term against a
Conv4 meta-learner, and its meta-update of φ). Compile time is reported apart; the figure is
the median wall time of the call over repeats, divided by T. Teacher accuracy: the teacher's on
its clean recovered images. FIVE starts from a freshly initialised meta-generator here, so its
accuracy says nothing about FIVE after meta-training (the inversion suite measures that); its
cost per step does not depend on φ's values.
"""
from __future__ import annotations

import jax

from free_jax.benchmarks import harness
from free_jax.data import load_split
from free_jax.inversion import InversionConfig, init_generator
from free_jax.inversion.recovery import RECOVERIES, recover
from free_jax.models.learner import create_meta_learner
from free_jax.zoo.pretrain import pretrain_teachers

METHOD_OF_RECOVERY = {"five": "free", "fresh_generator": "fresh_generator", "pixel": "pixel"}


def _settings(small: bool) -> dict:
    """The glyph demo's generator (nz 64, ngf 32, 100 images per teacher, k = 5) and the
    baselines' S = 200; tiny shapes at ``small``."""
    if small:
        return dict(size=16, teachers=2, width=8, meta_width=8, epochs=1, repeats=2,
                    config=InversionConfig(images_per_class=2, nz=16, ngf=8, k=2, flip=False, crop_padding=2,
                                           fresh_steps=3, pixel_steps=3))
    return dict(size=28, teachers=2, width=32, meta_width=32, epochs=10, repeats=2,
                config=InversionConfig(images_per_class=20, nz=64, ngf=32, k=5, flip=False,
                                       fresh_steps=200, pixel_steps=200))


def run(small: bool = False) -> str:
    s = _settings(small)
    config: InversionConfig = s["config"]
    split = load_split("glyphs", "train", image_size=s["size"], channels=1)
    group, specs = pretrain_teachers(split, "conv4", s["teachers"], config.way, s["epochs"], jax.random.key(0),
                                     width=s["width"])
    image_shape = tuple(group.image_shape)
    gen_params, gen_opt_state = init_generator(jax.random.key(1), config, image_shape)
    learner = create_meta_learner(jax.random.key(2), "conv4", config.way, image_shape, split.mean, split.std,
                                  s["meta_width"])
    steps = {"five": config.k, "fresh_generator": config.fresh_steps, "pixel": config.pixel_steps}
    rows, per_teacher = [], {}
    for name in RECOVERIES:
        call = jax.jit(lambda params, opt_state, meta_learner, key, name=name: recover(
            name, params, opt_state, [group], key, config, False, meta_learner, image_shape)[2])
        args = (gen_params, gen_opt_state, learner, jax.random.key(3))
        compile_seconds, compiled = harness.time_compile(call, *args)
        seconds = harness.median_seconds(lambda: compiled(*args), repeats=s["repeats"])
        recovered = compiled(*args)
        per_teacher[name] = seconds / group.size
        rows.append([METHOD_OF_RECOVERY[name], steps[name], f"{compile_seconds:.1f}", f"{per_teacher[name]:.3f}",
                     f"{1000 * per_teacher[name] / steps[name]:.1f}", f"{float(recovered.metrics['teacher_acc']):.2f}"])
    for row, name in zip(rows, RECOVERIES):
        row.append(f"{per_teacher[name] / per_teacher['five']:.1f}×")
    table = harness.markdown_table(
        ["method", "steps per teacher", "compile s", "recovery s per teacher", "ms per step per teacher",
         "teacher acc on recovered", "time vs free"], rows)
    return f"""Zoo: {s['teachers']} Conv4-{s['width']} teachers on glyphs {s['size']}×{s['size']}×1, 5-way,
{s['epochs']} epochs (held-out accuracy {sum(sp.heldout_accuracy for sp in specs) / len(specs):.2f} mean).
Generator nz {config.nz}, ngf {config.ngf}; B = {config.batch_size} images per teacher; crop padding
{config.crop_padding}, no flips. One jitted call recovers the {group.size} teachers' images (the training step's
recovery, ``free_jax.inversion.recovery``): FIVE k = {config.k} steps from the shared φ with the adversarial
term against a Conv4-{s['meta_width']} meta-learner, then φ's meta-update; a fresh generator
{config.fresh_steps} steps (lr {config.fresh_lr}); pixel inversion {config.pixel_steps} steps (lr {config.pixel_lr}).
Median of {s['repeats']} calls after one warm-up call, divided by the {group.size} teachers.
FIVE's teacher accuracy is from an untrained meta-generator (see the inversion suite for FIVE's quality).

{table}
"""
