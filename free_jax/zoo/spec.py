"""TeacherSpec: the JSON-serialisable description of one pre-trained teacher."""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import free_jax

SPEC_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class TeacherSpec:
    """Everything needed to use a teacher without its training data (docs/algorithm.md §1).

    Attributes:
      id: position of the teacher in its zoo (0-based, unique within the zoo).
      arch: architecture name (``free_jax.models.ARCHITECTURES``). width: its channel width.
      dataset: dataset name; split: the meta-split its classes come from (always "train").
      class_ids: global class id of each output n = 0..N-1 (``class_offset + split label``).
      class_names: name of each of those classes.
      image_shape: (H, W, C) the teacher expects.
      mean, std: per-channel input normalisation for images in [0, 1].
      heldout_accuracy: accuracy of the kept (best-epoch) snapshot on its 20 % held-out images.
      best_epoch: 1-based epoch of that snapshot. epochs: epochs trained.
      heldout_history: held-out accuracy after every epoch.
      seed: uint32 seed of this teacher's draws (classes, split, init, batches), derived from
        the run's key and ``run_index``. run_index: index of the teacher in its pre-training run.
      group: name of the stacked parameter group holding its weights; group_index: its position
        on that group's leading axis.
      version: free_jax version that trained it.
    """

    id: int
    arch: str
    width: int
    dataset: str
    split: str
    class_ids: tuple[int, ...]
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    heldout_accuracy: float
    best_epoch: int
    epochs: int
    heldout_history: tuple[float, ...]
    seed: int
    run_index: int
    group: str = ""
    group_index: int = -1
    version: str = free_jax.__version__

    @property
    def num_classes(self) -> int:
        return len(self.class_ids)

    def replace(self, **changes) -> "TeacherSpec":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record["format"] = SPEC_FORMAT
        return {key: list(value) if isinstance(value, tuple) else value for key, value in record.items()}

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> "TeacherSpec":
        """Inverse of ``to_dict``; unknown keys are an error (a newer, incompatible format)."""
        record = dict(record)
        record.pop("format", None)
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = set(record) - names
        if unknown:
            raise ValueError(f"teacher spec has unknown fields {sorted(unknown)}; it was written by a "
                             f"newer free_jax than {free_jax.__version__}: upgrade free_jax")
        missing = {field.name for field in dataclasses.fields(cls)
                   if field.default is dataclasses.MISSING} - set(record)
        if missing:
            raise ValueError(f"teacher spec misses fields {sorted(missing)}")
        for key in ("class_ids", "class_names", "image_shape", "mean", "std", "heldout_history"):
            record[key] = tuple(record[key])
        record["class_ids"] = tuple(int(c) for c in record["class_ids"])
        record["image_shape"] = tuple(int(d) for d in record["image_shape"])
        return cls(**record)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TeacherSpec":
        return cls.from_dict(json.loads(text))


def group_name(arch: str, width: int, image_shape, num_classes: int) -> str:
    """Name of the stacked group for teachers of this architecture, width, input and output size."""
    height, width_px, channels = image_shape
    return f"{arch}-w{width}-{height}x{width_px}x{channels}-n{num_classes}"
