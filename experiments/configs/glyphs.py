"""FREE on the embedded glyph benchmark (the README demo).

  python experiments/train_free.py --config=experiments/configs/glyphs.py --workdir=runs/glyphs

Arguments after ':' (comma-separated): ``smoke`` (seconds-long plumbing check), ``5shot``
(5-shot replay and validation), ``full`` (the paper's settings: 32×32×3, 100 teachers, 1000
iterations), ``table`` (the CPU comparison table of the README's "Results": 16×16 glyphs, 40
iterations, 50 meta-val and 200 meta-test episodes, 50-step fresh-generator and pixel baselines).
The default is the CPU demo: 28×28×1 glyphs, a 20-teacher zoo, small generator; on 2 CPU
cores it pre-trains the zoo, trains FREE, and evaluates 1- and 5-shot meta-test; the README's
quick-start command (fresh install included) took 13.5 minutes.
"""
from free_jax.training.config import (
    base_config,
    parse_options,
    shrink_for_smoke,
    use_glyph_cpu_demo,
    use_glyph_cpu_table,
)


def get_config(arg: str = ""):
    options = parse_options(arg, ("smoke", "5shot", "full", "table"))
    if {"full", "table"} <= options:
        raise ValueError("choose one of full (the paper's settings) and table (the CPU comparison table)")
    c = base_config()
    c.inversion.flip = c.zoo.flip = False         # mirrored characters are other characters
    if "full" not in options:
        use_glyph_cpu_demo(c)
    if "table" in options:
        use_glyph_cpu_table(c)
    if "5shot" in options:
        c.shot = 5
    if "smoke" in options:
        c.data_options.update(image_size=16, channels=1)
        c.image_size = 16
        shrink_for_smoke(c)
        c.eval.test_shots = (1,)
    return c
