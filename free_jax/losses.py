"""The losses and metrics of FREE, as pure functions: one copy for inversion, MAML and alignment.

Cross-entropy and accuracy serve MAML's inner and outer loops and the inversion's teacher term;
the KL divergence serves the adversarial term and the alignment's distillation; the remaining
terms are the inversion's (FIVE's adversarial term and the baselines' image priors). Every loss
takes logits/statistics already computed, so one forward pass serves several terms.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """Mean cross-entropy to integer targets.

    CE = −(1/B) Σ_b log softmax(logits_b)[y_b].

    Args:
      logits: (B, N). labels: int (B,) in 0..N-1 (relative to the task's or teacher's classes).
    """
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def kl_divergence(p_logits: jnp.ndarray, q_logits: jnp.ndarray) -> jnp.ndarray:
    """Per-sample KL(p ‖ q) = Σ_n p_n (log p_n − log q_n), p = softmax(p_logits), q likewise.

    A true KL on log-probabilities (the released code feeds probabilities to ``kl_div``; docs/algorithm.md §6.2).

    Returns:
      (B,) non-negative divergences.
    """
    log_p = jax.nn.log_softmax(p_logits, axis=-1)
    log_q = jax.nn.log_softmax(q_logits, axis=-1)
    return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def adversarial_loss(teacher_logits: jnp.ndarray, student_logits: jnp.ndarray) -> jnp.ndarray:
    """The adversarial term: reward disagreement where teacher and meta-learner agree.

    L_adv = −(1/B) Σ_b m_b · KL(p_t,b ‖ p_s,b),  m_b = [argmax p_t,b = argmax p_s,b],

    p_t = softmax(teacher logits), p_s = softmax(meta-learner logits). The mask is a constant
    (no gradient); samples outside it count as zero in the mean over all B. Whether the
    gradient flows through ``student_logits`` is the caller's choice (stop_gradient them for
    the released code's no-grad variant); the meta-learner's parameters are never updated.

    Args:
      teacher_logits, student_logits: (B, N) on the same (augmented) images.
    """
    agree = jnp.argmax(teacher_logits, -1) == jnp.argmax(student_logits, -1)
    mask = jax.lax.stop_gradient(agree.astype(teacher_logits.dtype))
    return -jnp.mean(mask * kl_divergence(teacher_logits, student_logits))


def bn_statistics_loss(bn_stats: Sequence[dict]) -> jnp.ndarray:
    """DeepInversion's BN-statistics term over a teacher's BatchNorm layers.

    L_bn = Σ_l ‖μ_l^batch − μ_l^running‖₂ + ‖σ²_l^batch − σ²_l^running‖₂,

    with μ^batch, σ²^batch the mean and biased variance over (B, H, W) of the features entering
    BN layer l (``free_jax.models.apply_with_bn_inputs``).
    """
    total = jnp.zeros((), jnp.float32)
    for layer in bn_stats:
        total = total + jnp.linalg.norm(layer["batch_mean"] - layer["running_mean"])
        total = total + jnp.linalg.norm(layer["batch_var"] - layer["running_var"])
    return total


def total_variation(images: jnp.ndarray) -> jnp.ndarray:
    """Squared total variation (image prior of DeepInversion/PURER), averaged per pixel pair.

    TV(x) = mean_{b,i,j,c} (x_{i+1,j} − x_{i,j})² + mean_{b,i,j,c} (x_{i,j+1} − x_{i,j})².

    Args:
      images: (B, H, W, C).
    """
    dh = images[:, 1:, :, :] - images[:, :-1, :, :]
    dw = images[:, :, 1:, :] - images[:, :, :-1, :]
    return jnp.mean(jnp.square(dh)) + jnp.mean(jnp.square(dw))


def l2_prior(images: jnp.ndarray) -> jnp.ndarray:
    """L2 image prior: mean_{b,i,j,c} x², on (normalised) images (B, H, W, C)."""
    return jnp.mean(jnp.square(images))


def accuracy(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """Fraction of samples with argmax logits = label."""
    return jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))
