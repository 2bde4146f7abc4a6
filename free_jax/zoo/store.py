"""The zoo store: stacked teacher groups in Orbax checkpoints plus a JSON spec per teacher.

On disk (``path``)::

  zoo.json                  format, free_jax version, groups, user metadata, teacher specs
  groups/<group name>/      one Orbax checkpoint per group: {"params", "batch_stats"}, each leaf
                            shaped (teachers in the group, ...)

A group holds the teachers that share architecture, width, image shape and class count (so
their weights stack); teachers of several datasets with the same image shape share a group and
keep their own normalisation. Saving writes a sibling temporary directory ``.<name>.tmp`` and
swaps it in (the old zoo moves to ``.<name>.old`` for the instant between the two renames), so
an interrupted save leaves the previous zoo intact; ``exists``/``load`` finish an interrupted
swap, keeping the newer complete zoo. Every group checkpoint carries per-array checksums, so a
damaged weight file is an error naming the file, never silently changed teachers.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import free_jax
from free_jax import checkpointing
from free_jax.models import build_backbone, init_variables
from free_jax.zoo.group import TeacherGroup
from free_jax.zoo.slots import TeacherSlots
from free_jax.zoo.spec import TeacherSpec, group_name

ZOO_FORMAT = 1
_INDEX = "zoo.json"


class Zoo:
    """An ordered collection of teachers, stored as one stacked pytree per group.

    Attributes:
      specs: one ``TeacherSpec`` per teacher; ``specs[i].id == i``.
      metadata: free-form JSON dict (the build configuration and resume progress live here).
    """

    def __init__(self, specs: Sequence[TeacherSpec], variables: dict[str, Any],
                 metadata: dict | None = None):
        self._variables = dict(variables)
        self.metadata = dict(metadata or {})
        self.specs = [spec.replace(id=i) for i, spec in enumerate(specs)]
        for name in self.group_names:
            members = [s for s in self.specs if s.group == name]
            size = jax.tree_util.tree_leaves(self._variables[name])[0].shape[0]
            if sorted(s.group_index for s in members) != list(range(size)):
                raise ValueError(f"group {name!r}: specs and the {size} stacked teachers disagree")

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def empty(cls, metadata: dict | None = None) -> "Zoo":
        return cls([], {}, metadata)

    @classmethod
    def from_pretrained(cls, results: Iterable[tuple[TeacherGroup, list[TeacherSpec]]],
                        metadata: dict | None = None) -> "Zoo":
        """A zoo from ``pretrain_teachers`` outputs (each a group and its specs)."""
        return cls.empty(metadata).extend(results)

    def extend(self, results: "Zoo | Iterable[tuple[TeacherGroup, list[TeacherSpec]]]") -> "Zoo":
        """A new zoo with more teachers appended (another ``Zoo`` or pre-training outputs)."""
        if isinstance(results, Zoo):
            results = [(results.group(name), [s for s in results.specs if s.group == name])
                       for name in results.group_names]
        variables, specs = dict(self._variables), list(self.specs)
        for group, group_specs in results:
            order = sorted(group_specs, key=lambda s: s.group_index)
            name = group_name(group.arch, order[0].width, group.image_shape, group.num_classes)
            offset = 0 if name not in variables else jax.tree_util.tree_leaves(variables[name])[0].shape[0]
            stacked = jax.tree_util.tree_map(lambda leaf: leaf[np.array([s.group_index for s in order])],
                                             group.variables)
            variables[name] = stacked if name not in variables else jax.tree_util.tree_map(
                lambda a, b: jnp.concatenate([a, b]), variables[name], stacked)
            specs += [s.replace(group=name, group_index=offset + i) for i, s in enumerate(order)]
        return Zoo(specs, variables, self.metadata)

    # ---- views ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.specs)

    @property
    def group_names(self) -> list[str]:
        """Group names in order of their first teacher."""
        return list(dict.fromkeys(spec.group for spec in self.specs))

    def group(self, name: str, indices: Sequence[int] | None = None) -> TeacherGroup:
        """Teachers of group ``name`` (all, or those at ``indices`` on its leading axis)."""
        members = sorted((s for s in self.specs if s.group == name), key=lambda s: s.group_index)
        if not members:
            raise KeyError(f"no group {name!r}; the zoo has {self.group_names}")
        indices = np.arange(len(members)) if indices is None else np.asarray(indices, np.int64)
        chosen = [members[i] for i in indices]
        first = chosen[0] if chosen else members[0]
        take = jnp.asarray(indices)
        return TeacherGroup(
            variables=jax.tree_util.tree_map(lambda leaf: leaf[take], self._variables[name]),
            class_ids=jnp.asarray([s.class_ids for s in chosen], jnp.int32).reshape(len(chosen), -1),
            mean=jnp.asarray([s.mean for s in chosen], jnp.float32).reshape(len(chosen), -1),
            std=jnp.asarray([s.std for s in chosen], jnp.float32).reshape(len(chosen), -1),
            module=build_backbone(first.arch, first.num_classes, first.width),
            arch=first.arch, image_shape=tuple(first.image_shape))

    def groups(self) -> list[TeacherGroup]:
        """Every teacher, one stacked ``TeacherGroup`` per group."""
        return [self.group(name) for name in self.group_names]

    def grouped_ids(self, teacher_ids: Sequence[int]) -> list[list[int]]:
        """The given teacher ids as ``select`` stacks them: one list per returned group, in order."""
        by_group: dict[str, list[int]] = {}
        for teacher_id in teacher_ids:
            by_group.setdefault(self.specs[int(teacher_id)].group, []).append(int(teacher_id))
        return [by_group[name] for name in self.group_names if name in by_group]

    def select(self, teacher_ids: Sequence[int]) -> list[TeacherGroup]:
        """The given teachers (repeats allowed), grouped; groups in zoo order, draws in order."""
        return [self.group(self.specs[ids[0]].group, [self.specs[i].group_index for i in ids])
                for ids in self.grouped_ids(teacher_ids)]

    def slots(self, teacher_ids: Sequence[int], stacks: Sequence[TeacherGroup] | None = None) -> TeacherSlots:
        """The given teachers as ``TeacherSlots`` over ``stacks`` (default ``groups()``; pass the
        run's device-resident copy so that only the indices travel), in ``select``'s order."""
        position = {name: g for g, name in enumerate(self.group_names)}
        ordered = [i for ids in self.grouped_ids(teacher_ids) for i in ids]
        group_of = np.asarray([position[self.specs[i].group] for i in ordered], np.int32)
        local_of = np.asarray([self.specs[i].group_index for i in ordered], np.int32)
        return TeacherSlots(tuple(self.groups() if stacks is None else stacks), jnp.asarray(group_of),
                            jnp.asarray(local_of))

    def sample_ids(self, key: jax.Array, num_teachers: int) -> np.ndarray:
        """``num_teachers`` teacher ids drawn uniformly with replacement (deterministic per key)."""
        if not self.specs:
            raise ValueError("cannot sample from an empty zoo")
        return np.asarray(jax.random.randint(key, (num_teachers,), 0, len(self.specs)))

    def sample(self, key: jax.Array, num_teachers: int) -> list[TeacherGroup]:
        """Draws ``num_teachers`` teachers with replacement, as stacked groups ready for vmap."""
        return self.select(self.sample_ids(key, num_teachers))

    # ---- compatibility ---------------------------------------------------------------------
    def check_compatible(self, way: int | None = None, image_shapes: Iterable | None = None,
                         archs: Iterable[str] | None = None, datasets: Iterable[str] | None = None,
                         path: str | Path | None = None) -> None:
        """Raises ``ValueError`` naming the first mismatch between the zoo and a configuration.

        Args:
          way: every teacher must have this many classes.
          image_shapes: every teacher's (H, W, C) must be one of these.
          archs / datasets: every teacher's architecture / dataset must be one of these, and
            every one listed must be present.
        """
        where = f"the zoo at {path}" if path else "the zoo"
        fix = ("point the run at another zoo directory, or delete this one so it is pre-trained "
               "again with the current configuration")
        if not self.specs:
            raise ValueError(f"{where} is empty; {fix}")
        found = {
            "way": sorted({s.num_classes for s in self.specs}),
            "image shape": sorted({tuple(s.image_shape) for s in self.specs}),
            "architecture": sorted({s.arch for s in self.specs}),
            "dataset": sorted({s.dataset for s in self.specs})}
        wanted = {"way": None if way is None else [way],
                  "image shape": None if image_shapes is None else sorted({tuple(s) for s in image_shapes}),
                  "architecture": None if archs is None else sorted(set(archs)),
                  "dataset": None if datasets is None else sorted(set(datasets))}
        for field, expected in wanted.items():
            if expected is None:
                continue
            extra = [v for v in found[field] if v not in expected]
            missing = [v for v in expected if v not in found[field]] if field in ("architecture", "dataset") else []
            if extra or missing:
                raise ValueError(f"{where} does not match the configuration: {field} {found[field]} "
                                 f"in the zoo, {expected} configured; {fix}")

    # ---- storage -----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Writes the zoo to ``path`` (replacing a zoo there) atomically; returns the path."""
        path = Path(path).absolute()
        temporary = path.parent / f".{path.name}.tmp"
        if temporary.exists():
            shutil.rmtree(temporary)
        groups = {}
        for name in self.group_names:
            first = next(s for s in self.specs if s.group == name)
            size = jax.tree_util.tree_leaves(self._variables[name])[0].shape[0]
            groups[name] = {"arch": first.arch, "width": first.width, "image_shape": list(first.image_shape),
                            "num_classes": first.num_classes, "size": size}
            checkpointing.save_tree(temporary / "groups" / name, self._variables[name], groups[name])
        index = {"format": ZOO_FORMAT, "free_jax_version": free_jax.__version__, "groups": groups,
                 "metadata": self.metadata, "teachers": [s.to_dict() for s in self.specs]}
        temporary.mkdir(parents=True, exist_ok=True)
        # zoo.json is written last, through its own temporary file: its presence marks a complete zoo.
        (temporary / f"{_INDEX}.tmp").write_text(json.dumps(index, indent=1))
        (temporary / f"{_INDEX}.tmp").rename(temporary / _INDEX)
        old = path.parent / f".{path.name}.old"
        if path.exists():
            if old.exists():
                shutil.rmtree(old)
            path.rename(old)
        temporary.rename(path)
        if old.exists():
            shutil.rmtree(old)
        return path

    @staticmethod
    def _finish_interrupted_save(path: Path) -> None:
        """After a kill between the two renames of ``save`` (no zoo at ``path``), moves the newer
        complete zoo (the temporary one if its index was written, else the old one) into place."""
        if path.exists():
            return
        for candidate in (path.parent / f".{path.name}.tmp", path.parent / f".{path.name}.old"):
            if (candidate / _INDEX).is_file():
                candidate.rename(path)
                return

    @staticmethod
    def exists(path: str | Path) -> bool:
        path = Path(path).absolute()
        Zoo._finish_interrupted_save(path)
        return (path / _INDEX).is_file()

    @staticmethod
    def stored_metadata(path: str | Path) -> dict | None:
        """The metadata of the zoo at ``path`` from its index alone (no weights read); None if
        there is no zoo there."""
        path = Path(path).absolute()
        if not Zoo.exists(path):
            return None
        return Zoo.load_index(path).get("metadata", {})

    @staticmethod
    def load_index(path: Path) -> dict:
        """The parsed zoo.json of the zoo at ``path`` (a damaged index: a clear error)."""
        try:
            index = json.loads((path / _INDEX).read_text())
            if not isinstance(index, dict) or not {"groups", "teachers"} <= set(index):
                raise ValueError("it is not a zoo index (no 'groups'/'teachers')")
        except (ValueError, UnicodeDecodeError) as error:  # json.JSONDecodeError is a ValueError
            raise ValueError(f"the zoo index {path / _INDEX} is damaged ({str(error)[:200]}), so the zoo cannot be "
                             f"read. Delete the zoo directory {path} so it is pre-trained again, or point the run "
                             "at an intact copy") from error
        return index

    @classmethod
    def load(cls, path: str | Path, **expected) -> "Zoo":
        """Restores a zoo saved by ``save``; ``expected`` is passed to ``check_compatible``."""
        path = Path(path).absolute()
        if not cls.exists(path):
            raise FileNotFoundError(f"no model zoo at {path} ({_INDEX} missing); pre-train one with "
                                    f"experiments/pretrain_zoo.py --output_dir={path}")
        index = cls.load_index(path)
        if index.get("format") != ZOO_FORMAT:
            raise ValueError(f"zoo at {path} has format {index.get('format')}, this free_jax reads "
                             f"{ZOO_FORMAT}; pre-train the zoo again")
        specs = [TeacherSpec.from_dict(record) for record in index["teachers"]]
        variables = {}
        for name, group in index["groups"].items():
            module = build_backbone(group["arch"], group["num_classes"], group["width"])
            shape = tuple(group["image_shape"])
            size = group["size"]
            target = jax.eval_shape(lambda m=module, s=shape, n=size: jax.vmap(  # traced, not run
                lambda k: init_variables(m, k, s))(jax.random.split(jax.random.key(0), n)))
            try:
                variables[name] = checkpointing.restore_tree(path / "groups" / name, target)
            except checkpointing.CheckpointError as error:
                raise checkpointing.CheckpointError(
                    f"teacher group {name!r} of the zoo at {path} cannot be read: {error}. Delete the zoo directory "
                    f"{path} so it is pre-trained again, or point the run at an intact copy") from error
        zoo = cls(specs, variables, index.get("metadata"))
        if any(value is not None for value in expected.values()):
            zoo.check_compatible(path=path, **expected)
        return zoo
