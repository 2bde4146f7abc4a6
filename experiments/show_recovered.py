"""Writes a PNG grid of images recovered by FIVE, per teacher and class, with the teacher's confidence.

  python experiments/show_recovered.py --zoo=/tmp/zoo --output=/tmp/recovered.png \
      [--generator=CKPT_DIR] [--meta_iterations=100] [--image_size=16 --channels=1 --epochs=30]

Loads (or pre-trains, with the small settings below) the glyph zoo at ``--zoo``. Without
``--generator`` it meta-trains a generator for ``--meta_iterations`` warm-up iterations (no
meta-learner) on the zoo's other teachers; the last ``--show_teachers`` teachers are held out,
the generator is adapted k steps to each, and their images form the grid (rows = teacher ×
class, columns = samples; green confidence ≥ 0.5, red below).
"""
import time

import jax
import numpy as np
from absl import app, flags

from free_jax import checkpointing, zoo as zoo_lib
from free_jax.inversion import InversionConfig, init_generator, invert, meta_train_warmup
from free_jax.inversion.grid import inversion_rows, recovered_grid_png

_ZOO = flags.DEFINE_string("zoo", "/tmp/free_jax_show_zoo", "Zoo directory (built if absent).")
_OUTPUT = flags.DEFINE_string("output", "/tmp/free_jax_recovered.png", "PNG to write.")
_GENERATOR = flags.DEFINE_string("generator", "", "Generator checkpoint (save_tree of gen_params).")
_SAVE_GENERATOR = flags.DEFINE_string("save_generator", "", "Where to save the meta-trained generator.")
_META_ITERATIONS = flags.DEFINE_integer("meta_iterations", 100, "Warm-up meta-iterations without a checkpoint.")
_SHOW = flags.DEFINE_integer("show_teachers", 2, "Held-out teachers to show.")
_SAMPLES = flags.DEFINE_integer("samples", 6, "Images per class (P).")
_K = flags.DEFINE_integer("k", 5, "Adaptation steps.")
_NGF = flags.DEFINE_integer("ngf", 16, "Generator width.")
_NZ = flags.DEFINE_integer("nz", 32, "Latent size.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 16, "Glyph size when the zoo is built here.")
_CHANNELS = flags.DEFINE_integer("channels", 1, "Glyph channels when the zoo is built here.")
_TEACHERS = flags.DEFINE_integer("num_teachers", 8, "Teachers when the zoo is built here.")
_EPOCHS = flags.DEFINE_integer("epochs", 40, "Teacher epochs when the zoo is built here.")


def main(argv):
    del argv
    config = zoo_lib.default_config()
    config.num_teachers, config.epochs, config.width = _TEACHERS.value, _EPOCHS.value, 16
    config.data_options.update(image_size=_IMAGE_SIZE.value, channels=_CHANNELS.value)
    zoo = zoo_lib.build_or_load_zoo(_ZOO.value, config)
    shown_ids = list(range(len(zoo) - _SHOW.value, len(zoo)))
    train_ids = np.arange(len(zoo) - _SHOW.value)
    shown = zoo.select(shown_ids)
    image_shape = tuple(shown[0].image_shape)
    inv_config = InversionConfig(way=shown[0].num_classes, images_per_class=_SAMPLES.value,
                                 nz=_NZ.value, ngf=_NGF.value, k=_K.value, flip=False)
    gen_params, gen_opt = init_generator(jax.random.key(0), inv_config, image_shape)
    if _GENERATOR.value:
        gen_params = checkpointing.restore_tree(_GENERATOR.value, gen_params)
    else:
        rng = np.random.default_rng(0)
        start = time.perf_counter()

        def show(iteration, metrics):
            if iteration % 20 == 0 or iteration == _META_ITERATIONS.value - 1:
                print(f"meta-iteration {iteration}: teacher acc {float(metrics['teacher_acc']):.2f} "
                      f"ce {float(metrics['ce']):.3f} ({time.perf_counter() - start:.0f} s)", flush=True)

        gen_params, gen_opt = meta_train_warmup(
            gen_params, gen_opt, lambda _: zoo.select(sorted(rng.choice(train_ids, 4))), _META_ITERATIONS.value,
            inv_config, on_iteration=show)
        if _SAVE_GENERATOR.value:
            checkpointing.save_tree(_SAVE_GENERATOR.value, gen_params, overwrite=True)
    result = jax.jit(lambda p, key: invert(p, shown, None, key, inv_config, warmup=True))(
        gen_params, jax.random.key(12345))
    images, labels, confidences, keys, titles = inversion_rows(
        result.per_group_images, result.per_group_labels, result.per_group_confidence,
        np.asarray(result.targets), zoo.grouped_ids(shown_ids))
    recovered_grid_png(images, labels, confidences, _OUTPUT.value,
                       samples_per_row=_SAMPLES.value, row_titles=titles, row_keys=keys)
    print(f"teacher accuracy on recovered images {float(result.metrics['teacher_acc']):.3f}; "
          f"wrote {_OUTPUT.value}")


if __name__ == "__main__":
    app.run(main)
