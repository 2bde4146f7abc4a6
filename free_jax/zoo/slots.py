"""Drawn teachers as indices into the zoo's device-resident stacks: one program for every draw.

``Zoo.select`` stacks the drawn teachers of each architecture into a ``TeacherGroup`` on the
host, so the compiled iteration depends on the draw's *mix*: which groups occur and how many
teachers each holds (a multi-architecture zoo of 3 groups and 4 teachers per draw has 15 mixes,
each compiling recovery and alignment again), and every iteration copies the drawn weights to
the device.

``TeacherSlots`` is the draw as T slots instead: every zoo group's whole stack (put on the
device once per run) and, per slot, the index of its group and of the teacher within that
group, both (T,) int32 arrays. Only the indices change between draws, so one program serves
every draw, and the weights are gathered by index inside it:

* one group (the single-architecture zoo): ``gathered()`` is the ``TeacherGroup`` that
  ``Zoo.select`` would have made, gathered in-program, and the grouped code runs unchanged;
* several groups: ``map_slots`` runs a per-teacher function over the slots, each slot switching
  (``lax.switch``) to its group's branch, so only the drawn teacher's architecture runs.

Slots are in the order ``Zoo.select`` stacks teachers: groups in zoo order, draws in order.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import struct

from free_jax.vectorize import map_leading, resolve
from free_jax.zoo.group import TeacherGroup


@struct.dataclass
class TeacherSlots:
    """T drawn teachers: ``stacks[group_of[t]]``'s teacher ``local_of[t]`` for slot t.

    Attributes:
      stacks: every group of the zoo, all its teachers (``TeacherGroup``s, leaves (T_g, ...)).
      group_of, local_of: (T,) int32 group index and index within the group of each slot.
    """

    stacks: tuple
    group_of: jnp.ndarray
    local_of: jnp.ndarray

    @property
    def size(self) -> int:
        return int(self.group_of.shape[0])

    @property
    def single_group(self) -> bool:
        return len(self.stacks) == 1

    def gathered(self) -> list[TeacherGroup]:
        """The drawn teachers as one stacked group (only for a zoo of one group): the group
        ``Zoo.select`` makes, gathered by index (inside jit: in the program)."""
        if not self.single_group:
            raise ValueError(f"gathered() needs a zoo of one group; this one has {len(self.stacks)} "
                             "(use map_slots)")
        stack, take = self.stacks[0], self.local_of
        return [stack.replace(variables=jax.tree_util.tree_map(lambda leaf: leaf[take], stack.variables),
                              class_ids=stack.class_ids[take], mean=stack.mean[take], std=stack.std[take])]


def as_groups(teachers) -> list[TeacherGroup] | None:
    """``teachers`` as stacked groups for the grouped code: a list of groups as it is, one-group
    slots gathered; None for slots over several groups (the caller uses ``map_slots``)."""
    if not isinstance(teachers, TeacherSlots):
        return list(teachers)
    return teachers.gathered() if teachers.single_group else None


def map_slots(branch_of: Callable[[TeacherGroup], Callable], stacks: Sequence[TeacherGroup],
              group_of: jnp.ndarray, local_of: jnp.ndarray, per_slot=(), strategy: str = "auto",
              in_flight: int = 0):
    """``stack over t of branch_of(stacks[group_of[t]])(local_of[t], *per_slot[t])``.

    ``branch_of(stack)`` returns the per-teacher function of that group (it gathers its teacher
    by the index it is given); every branch must return the same shapes and dtypes. Slots are
    mapped with ``strategy`` (``vectorize``), but a vmap would evaluate every branch for every
    slot (a batched switch becomes a select), so "vmap" maps with ``lax.map`` here.
    ``in_flight``: with "loop", at most this many slots run at once (``map_leading``).
    """
    branches = [branch_of(stack) for stack in stacks]
    strategy = resolve(strategy)

    def one(group, local, *args):
        if len(branches) == 1:
            return branches[0](local, *args)
        return jax.lax.switch(group, branches, local, *args)

    return map_leading(one, group_of, local_of, *per_slot, strategy="lax_map" if strategy == "vmap" else strategy,
                       in_flight=in_flight)
