"""The FREE training state: one pytree holding everything a resumed run needs."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from free_jax import memory
from free_jax.inversion import InversionConfig, init_generator
from free_jax.models.learner import MetaLearner, create_meta_learner


@struct.dataclass
class FreeState:
    """θ, its persistent Adam, φ, its persistent Adam, the memory bank, the step, the RNG key.

    ``key_data`` is the raw uint32 data of the run's base key (checkpointable as a plain array);
    iteration ``step`` uses ``fold_in(key, step)``, so a resumed run draws the same numbers.
    """

    meta_learner: MetaLearner
    meta_opt_state: Any
    gen_params: Any
    gen_opt_state: Any
    bank: memory.MemoryBank
    step: jnp.ndarray
    key_data: jnp.ndarray

    def iteration_key(self) -> jax.Array:
        return jax.random.fold_in(jax.random.wrap_key_data(self.key_data), self.step)


def outer_optimizer(learning_rate: float) -> optax.GradientTransformation:
    """The one persistent Adam on θ shared by the alignment and the replay updates (docs/algorithm.md §2.3)."""
    return optax.adam(learning_rate)


def init_state(key: jax.Array, *, meta_arch: str, meta_width: int, way: int, image_shape, mean, std,
               inversion: InversionConfig, outer_lr: float, num_classes_total: int,
               bank_capacity: int, bank_dtype: str) -> FreeState:
    """A fresh state: random θ and φ, empty bank, step 0."""
    meta_key, gen_key, run_key = jax.random.split(key, 3)
    meta_learner = create_meta_learner(meta_key, meta_arch, way, image_shape, mean, std, meta_width)
    gen_params, gen_opt_state = init_generator(gen_key, inversion, image_shape)
    return FreeState(
        meta_learner=meta_learner,
        meta_opt_state=outer_optimizer(outer_lr).init(meta_learner.params),
        gen_params=gen_params, gen_opt_state=gen_opt_state,
        bank=memory.create_bank(num_classes_total, bank_capacity, tuple(image_shape), jnp.dtype(bank_dtype)),
        step=jnp.zeros((), jnp.int32), key_data=jax.random.key_data(run_key))
