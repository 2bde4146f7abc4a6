"""Hyper-parameters of FIVE and of the baselines' inversions (docs/algorithm.md §2.1, §3, §5)."""
from __future__ import annotations

import dataclasses
from typing import Any, Literal

from free_jax.models.conv import KERNEL_GRADIENTS
from free_jax.vectorize import resolve

KERNEL_GRADIENT_SETTINGS = ("auto", *KERNEL_GRADIENTS)


@dataclasses.dataclass(frozen=True)
class InversionConfig:
    """Everything the inversion code reads; frozen and hashable, so it can be a static jit argument.

    Attributes:
      way: N, classes per teacher. images_per_class: P; each teacher gets B = N·P images.
      nz, ngf: generator latent size and base width (docs/algorithm.md §3).
      k: generator adaptation steps per teacher (FIVE).
      gen_lr, z_lr, betas: the inner Adam on generator parameters and on latent codes.
      lambda_adv: weight of the adversarial term (only after warm-up, with a meta-learner).
      lambda_bn: weight of the DeepInversion BN-statistics term (0 = off, the default).
      adv_through_meta_learner: True (default) lets the adversarial gradient flow through the
        meta-learner's forward pass into the images; False is the released code's ``no_grad``
        variant (only the teacher's path carries gradient).
      meta_update: "fomaml" (g = Σ_t ∇_φ L_inv at the adapted φ_t) or "reptile"
        (g = Σ_t (φ − φ_t)).
      meta_lr: the persistent outer Adam on φ (betas ``betas``).
      strategy: how teachers of one group are mapped (``free_jax.vectorize``; "auto" as
        ``teacher_strategy`` resolves it).
      teachers_in_flight: with strategy "loop" (on the CPU "auto" with ``scan_steps=False``), at
        most this many teachers' adaptations run at once in the recovery program (0 = no limit).
        Unlimited, XLA:CPU interleaves every teacher of the draw and keeps all their activations
        alive together, so the program's temporaries grow with the draw; fewer teachers in flight
        trade time for memory (measured in BENCHMARKS.md, "Where the free suite's memory goes" and
        "The generator's upsampling convolutions"). The default 4 leaves the default draw of 4
        as it is and bounds larger draws. The math does not depend on it (a float64 parity test);
        in float32 the program's fusions, and so its rounding, change for the teachers that wait.
        The CPU default (scanned steps, ``lax.map`` over the teachers) runs one teacher at a time
        and does not read this setting.
      scan_steps: run the k inner steps as ``lax.scan`` (the default) instead of unrolled Python.
        Scanned, "auto" maps the teachers with ``lax.map`` on the CPU (``teacher_strategy``) and
        the convolutions take the loop-friendly kernel gradient: a recovery program compiled
        several times faster, in the same time per recovery and about half the peak memory
        (figures in BENCHMARKS.md, "FIVE's inner loop").
      kernel_gradient: how the generator's last convolution and the teachers' convolutions take
        their kernel gradient on the CPU in FIVE (``free_jax.models.conv``; the generator's
        upsampling convolutions always take "windows", faster for their phase kernels):
        "convolution" (JAX's rule: a third of the
        recovery program's memory and faster, but ~100× slower inside loop bodies), "windows"
        (fast inside loop bodies), or "auto" (the default): "convolution" where FIVE's program has
        no loop (teachers mapped by "loop", the k steps unrolled), else "windows".
      crop_padding: random-crop padding in pixels (0 disables cropping).
      flip: random horizontal flips (turn off for glyphs/characters, whose mirror images are
        other symbols).
      fresh_steps, fresh_lr: per-teacher fresh-generator baseline (BiDf-MKD/TGR: 200 steps).
      pixel_steps, pixel_lr, pixel_lambda_tv, pixel_lambda_l2, pixel_lambda_bn: PURER-style
        pixel inversion (images are the parameters).
      mesh: a ``tasks`` device mesh (``free_jax.sharding``) to split the teachers of a group
        over, or None (one device).
    """

    way: int = 5
    images_per_class: int = 20
    nz: int = 256
    ngf: int = 64
    k: int = 5
    gen_lr: float = 1e-3
    z_lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)
    lambda_adv: float = 1.0
    lambda_bn: float = 0.0
    adv_through_meta_learner: bool = True
    meta_update: Literal["fomaml", "reptile"] = "fomaml"
    meta_lr: float = 1e-3
    strategy: str = "auto"
    teachers_in_flight: int = 4
    scan_steps: bool = True
    kernel_gradient: str = "auto"
    crop_padding: int = 4
    flip: bool = True
    fresh_steps: int = 200
    fresh_lr: float = 1e-3
    pixel_steps: int = 200
    pixel_lr: float = 0.05
    pixel_lambda_tv: float = 1.0
    pixel_lambda_l2: float = 1e-3
    pixel_lambda_bn: float = 0.01
    mesh: Any = None

    def __post_init__(self):
        if self.meta_update not in ("fomaml", "reptile"):
            raise ValueError(f"meta_update must be 'fomaml' or 'reptile', got {self.meta_update!r}")
        if self.kernel_gradient not in KERNEL_GRADIENT_SETTINGS:
            raise ValueError(f"kernel_gradient={self.kernel_gradient!r}; choose one of {KERNEL_GRADIENT_SETTINGS}")
        if self.teachers_in_flight < 0:
            raise ValueError(f"teachers_in_flight must be >= 0 (0 = no limit), got {self.teachers_in_flight}")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")

    def kernel_gradient_form(self) -> str:
        """The convolutions' kernel-gradient form in FIVE (``kernel_gradient``, resolved).

        "auto": JAX's convolution rule ("convolution") where the program has no loop — the
        teachers mapped by "loop" (a Python loop) and the k steps unrolled (``scan_steps=False``) —
        since there it is faster and needs a fraction of the memory (BENCHMARKS.md, "The fix taken:
        JAX's rule where the program has no loop"); the loop-friendly "windows" form
        otherwise (scanned steps, the default, or ``lax.map`` over teachers)."""
        if self.kernel_gradient != "auto":
            return self.kernel_gradient
        unrolled = self.teacher_strategy() == "loop" and not self.scan_steps
        return "convolution" if unrolled else "windows"

    def teacher_strategy(self) -> str:
        """How FIVE maps the teachers of a group (``strategy`` resolved, ``free_jax.vectorize``).

        "auto" is vmap on accelerators. On the CPU it is ``lax.map`` when the k steps are scanned
        (the default): one teacher's loop compiled once, the teachers one after another; else the
        Python loop, whose unrolled teachers XLA:CPU interleaves. The first compiles faster and
        holds a fraction of the executable and temporaries of the second, in the same time per
        recovery (figures in BENCHMARKS.md, "FIVE's inner loop")."""
        return resolve(self.strategy, cpu="lax_map" if self.scan_steps else "loop")

    @property
    def batch_size(self) -> int:
        """B = N·P images per teacher."""
        return self.way * self.images_per_class
