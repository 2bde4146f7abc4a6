"""Pooling forms for Conv4, side by side: speed and whether the compiled 2nd derivative is exact.

Three ways to write a 2×2 max-pool (docs/exact_gradients.md): reshape + max (free_jax's former
form; XLA miscompiles its second derivative), the elementwise maximum of four strided sub-grids
(free_jax's form) and ``lax.reduce_window`` (``flax.linen.max_pool``). For each, on this backend:
Conv4 fwd+bwd of a batch and one second-order MAML task (medians, interleaved rounds so load hits
every form alike), and the relative error of a jitted vmapped float64 meta-gradient against the
eager loop at tiny shapes.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from free_jax.benchmarks import harness
from free_jax.models import conv4, layers


def reshape_max_pool(x):
    b, h, w, c = x.shape
    return x[:, : h // 2 * 2, : w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def reduce_window_pool(x):
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


FORMS = {"reshape + max (former)": reshape_max_pool, "strided maximum (free_jax)": layers.max_pool_2x2,
         "lax.reduce_window": reduce_window_pool}


def _programs(settings):
    """Compiled (fwd+bwd, 2nd-order MAML task) of the Conv4 meta-learner, built with the pooling
    installed at trace time (``conv4.max_pool_2x2`` is read when the module is applied)."""
    from free_jax.meta import maml
    from free_jax.models.learner import create_meta_learner
    shape, width, images = settings["shape"], settings["width"], settings["images"]
    learner = create_meta_learner(jax.random.key(0), "conv4", 5, shape, [0.5] * shape[-1], [0.25] * shape[-1], width)
    logits_fn = learner.logits_fn()
    x = jax.random.uniform(jax.random.key(1), (images, *shape))
    y = jnp.arange(images) % 5
    fwd_bwd = jax.jit(jax.grad(lambda p: maml.cross_entropy(logits_fn(p, x), y)))
    task = maml.Task(x[:5], y[:5], x[5:], y[5:])
    second = jax.jit(jax.grad(lambda p: maml.task_loss(logits_fn, p, task, settings["steps"], 0.01)[0]))
    # compiled now: the next form's swap clears the jit caches these would otherwise be re-traced from
    return learner.params, fwd_bwd.lower(learner.params).compile(), second.lower(learner.params).compile()


def _verdict(error: float) -> str:
    return "not measured (--small)" if np.isnan(error) else "exact" if error < 1e-9 else "**wrong**"


def run(small: bool = False) -> str:
    from free_jax.meta.selfcheck import meta_gradient_error
    # --small is a plumbing check (the suite's test): one inner step compiles in a fraction of five's time
    settings = (dict(shape=(16, 16, 1), width=8, images=20, rounds=2, steps=1) if small
                else dict(shape=(32, 32, 3), width=64, images=75, rounds=7, steps=5))
    load_before = os.getloadavg()
    original = conv4.max_pool_2x2
    compiled, errors = {}, {}
    try:
        for name, form in FORMS.items():
            conv4.max_pool_2x2 = form
            jax.clear_caches()      # model calls are jitted programs traced once per module and shapes
            params, fwd_bwd, second = _programs(settings)
            harness.block(fwd_bwd(params)), harness.block(second(params))       # warm up
            compiled[name] = (params, fwd_bwd, second)
            # --small measures no error (the eager float64 reference dominates its run time; the
            # same check of free_jax's form and of the former one is tests/test_selfcheck.py's).
            errors[name] = float("nan") if small else meta_gradient_error("vmap", width=4)[0]
    finally:
        conv4.max_pool_2x2 = original
        jax.clear_caches()          # no later model call may reuse a trace of another form
    times = {name: ([], []) for name in FORMS}
    for _ in range(settings["rounds"]):
        for name, (params, fwd_bwd, second) in compiled.items():
            times[name][0].append(harness.median_seconds(lambda: fwd_bwd(params), repeats=1, warmup=0))
            times[name][1].append(harness.median_seconds(lambda: second(params), repeats=1, warmup=0))
    base = np.median(times["reshape + max (former)"][0])
    rows = [[name, f"{np.median(t[0]) * 1e3:.0f}", f"{np.median(t[0]) / base:.2f}×", f"{np.median(t[1]) * 1e3:.0f}",
             f"{errors[name]:.1e}", _verdict(errors[name])] for name, t in times.items()]
    table = harness.markdown_table(["pooling", "Conv4 fwd+bwd ms", "vs reshape", "2nd-order MAML task ms",
                                    "jitted vmap meta-grad rel. error (float64)", "verdict"], rows)
    load_after = os.getloadavg()
    return f"""Conv4-{settings['width']} meta-learner at {'×'.join(map(str, settings['shape']))}: fwd+bwd of
{settings['images']} images (cross-entropy), and one 2nd-order MAML task (5-way 1-shot, {settings['images'] - 5}
queries, {settings['steps']} inner step(s) at lr 0.01); medians of {settings['rounds']} interleaved rounds. The
error column is
`free_jax.meta.selfcheck.meta_gradient_error("vmap")` (2 tiny tasks, float64, jit vs eager loop).

{table}

{harness.load_line(load_before, load_after)}
"""
