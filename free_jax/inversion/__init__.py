"""FIVE: meta-generator adaptation and meta-update; the baselines' inversions.

The losses and augmentation that inversion shares with meta-learning live one layer below, in
``free_jax.losses`` and ``free_jax.augment``.
"""
from free_jax.inversion.config import InversionConfig
from free_jax.inversion.five import (
    AdaptResult,
    InversionResult,
    adapt_generator,
    inversion_loss,
    invert,
    invert_and_meta_update,
    relative_targets,
)
from free_jax.inversion.generator import (
    generate,
    generator_module,
    init_generator,
    meta_optimizer,
    meta_update_generator,
)
from free_jax.inversion.warmup import meta_train_warmup, warmup_meta_step

__all__ = ["AdaptResult", "InversionConfig", "InversionResult", "adapt_generator", "generate",
           "generator_module", "init_generator", "inversion_loss", "invert", "invert_and_meta_update",
           "meta_optimizer", "meta_train_warmup", "meta_update_generator", "relative_targets", "warmup_meta_step"]
