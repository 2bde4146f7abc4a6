"""FREE on the embedded glyph benchmark (the README demo).

  python experiments/train_free.py --config=experiments/configs/glyphs.py --workdir=runs/glyphs

Arguments after ':' (comma-separated): ``smoke`` (seconds-long plumbing check), ``5shot``
(5-shot replay and validation), ``full`` (SPEC-size settings: 32×32×3, 100 teachers, 1000 iterations).
The default is the CPU demo: 28×28×1 glyphs, a 20-teacher zoo, small generator; on 2 CPU
cores it pre-trains the zoo, trains FREE, and evaluates 1- and 5-shot meta-test in ~10 minutes.
"""
from free_jax.training.config import base_config


def get_config(arg: str = ""):
    options = {part for part in arg.split(",") if part}
    unknown = options - {"smoke", "5shot", "full"}
    if unknown:
        raise ValueError(f"unknown config options {sorted(unknown)}; use smoke, 5shot, full")
    c = base_config()
    c.datasets = ("glyphs",)
    c.inversion.flip = False                      # mirrored characters are other characters
    c.zoo.flip = False
    if "full" not in options:                     # the CPU demo
        c.data_options = {"image_size": 28, "channels": 1}
        c.image_size = 28
        c.zoo.num_teachers, c.zoo.epochs, c.zoo.width, c.zoo.batch_size = 20, 20, 32, 64
        c.iterations, c.warmup, c.teachers_per_iteration = 60, 5, 4
        c.inversion.update(images_per_class=20, nz=64, ngf=32, k=5)
        c.replay.update(tasks_per_batch=4, batches=3)
        c.eval.update(every=20, val_episodes=100, test_episodes=600)
        c.checkpoint_every, c.grid_every = 20, 60
    if "5shot" in options:
        c.shot = 5
    if "smoke" in options:
        c.data_options = {"image_size": 16, "channels": 1}
        c.image_size = 16
        c.zoo.num_teachers, c.zoo.epochs, c.zoo.width, c.zoo.save_every = 3, 1, 8, 3
        c.iterations, c.warmup, c.teachers_per_iteration = 3, 1, 2
        c.query = 3
        c.inversion.update(images_per_class=4 if c.shot == 1 else 8, nz=16, ngf=8, k=2)
        c.replay.update(tasks_per_batch=2, batches=2, inner_steps=2)
        c.eval.update(every=1, val_episodes=4, test_episodes=4, query=3, steps=2, test_shots=(1,))
        c.checkpoint_every, c.grid_every, c.bank_capacity = 1, 2, 20
    return c
