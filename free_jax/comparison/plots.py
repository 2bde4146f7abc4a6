"""The comparison's figures (matplotlib, Agg backend: no display needed).

- ``val_curves.png``: meta-validation accuracy vs iteration and vs wall-clock seconds, per
  trained (method, shot), mean over seeds with a band of ± the mean 95 % CI; an untrained method
  is a dashed horizontal line at its meta-validation accuracy.
- ``recovery_speed.png``: the teacher's accuracy on the recovered images vs inversion steps and
  vs seconds, FIVE (meta-generator) vs a fresh generator (``free_jax.comparison.speed``).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _mean_curve(records, x_key: str):
    """(x, mean accuracy, mean CI) over the seeds' curves, on the evaluation points all share."""
    curves = [r["curve"] for r in records if r["curve"]]
    if not curves:
        return None
    length = min(len(c) for c in curves)
    if x_key == "wall_s" and any(p["wall_s"] is None for c in curves for p in c[:length]):
        return None
    x = np.mean([[p[x_key] for p in c[:length]] for c in curves], axis=0)
    acc = np.mean([[p["val_accuracy"] for p in c[:length]] for c in curves], axis=0)
    ci = np.mean([[p["val_ci95"] for p in c[:length]] for c in curves], axis=0)
    return x, acc, ci


def val_curves(records: list[dict], path: Path) -> None:
    groups: dict = {}
    for record in records:
        groups.setdefault((record["row"]["method"], record["row"]["shot"]), []).append(record)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for (method, shot), rows in groups.items():
        label = f"{method} ({shot}-shot, {len(rows)} seed{'' if len(rows) == 1 else 's'})"
        if not rows[0]["trained"]:
            level = np.mean([r["paper"]["val"]["mean"] for r in rows])
            for axis in axes:
                axis.axhline(level, linestyle="--", linewidth=1, label=label, color="grey" if shot == 1 else "black")
            continue
        for axis, x_key in zip(axes, ("step", "wall_s")):
            curve = _mean_curve(rows, x_key)
            if curve is None:
                continue
            x, acc, ci = curve
            (line,) = axis.plot(x, acc, marker="o", markersize=3, label=label)
            axis.fill_between(x, acc - ci, acc + ci, alpha=0.2, color=line.get_color())
    axes[0].set_xlabel("iteration")
    axes[1].set_xlabel("wall-clock seconds since the row's training began (compilation included)")
    for axis in axes:
        axis.set_ylabel("meta-validation accuracy (%)")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.suptitle("Meta-validation accuracy (paper protocol), mean over seeds ± mean 95 % CI")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def recovery_speed(speed: dict, path: Path) -> None:
    """``speed``: the JSON of ``comparison.speed.measure`` (per teacher curves and step seconds)."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    meta = np.mean([t["meta"] for t in speed["teachers"]], axis=0)
    fresh = np.mean([t["fresh"] for t in speed["teachers"]], axis=0)
    step_s = float(np.median([t["step_seconds"] for t in speed["teachers"]]))
    axis_settings = ((axes[0], 1.0, "inversion steps"), (axes[1], step_s, "seconds (steps × median step time)"))
    for axis, scale, xlabel in axis_settings:
        axis.plot(np.arange(len(fresh)) * scale, fresh, label="fresh generator per teacher")
        axis.plot(np.arange(len(meta)) * scale, meta, marker="o", label=f"FIVE meta-generator (k = {len(meta) - 1})")
        axis.set_xlabel(xlabel)
        axis.set_ylabel("teacher accuracy on recovered images")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle(f"Recovery speed: mean over {len(speed['teachers'])} zoo teachers × {speed['draws']} draws "
                    f"({speed['row']})")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
