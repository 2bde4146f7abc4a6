"""FIVE: losses, augmentation, meta-generator adaptation and meta-update; baselines' inversions."""
from free_jax.inversion.augment import random_crop_flip, resize_to, teacher_input, teacher_view
from free_jax.inversion.config import InversionConfig
from free_jax.inversion.five import (AdaptResult, InversionResult, adapt_generator, generate,
                                     generator_module, generator_variables, init_generator,
                                     inversion_loss, invert, invert_and_meta_update, meta_optimizer,
                                     meta_update_generator, relative_targets)
from free_jax.inversion.losses import (accuracy, adversarial_loss, bn_statistics_loss,
                                       cross_entropy, kl_divergence, l2_prior, total_variation)

__all__ = ["AdaptResult", "InversionConfig", "InversionResult", "accuracy", "adapt_generator",
           "adversarial_loss", "bn_statistics_loss", "cross_entropy", "generate",
           "generator_module", "generator_variables", "init_generator", "inversion_loss", "invert",
           "invert_and_meta_update",
           "kl_divergence", "l2_prior", "meta_optimizer", "meta_update_generator",
           "random_crop_flip", "relative_targets", "resize_to", "teacher_input", "teacher_view",
           "total_variation"]
