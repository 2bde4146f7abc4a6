"""Evaluates a saved FREE meta-learner on any split, shots and episode count (after training).

The meta-learner is rebuilt from the run's configuration: the abstract parameters come from
``jax.eval_shape`` of the same constructors the training loop uses, and the checkpoint is
restored onto them (``which="best"``: the parameters selected on meta-validation;
``which="latest"``: the newest whole training state). Episodes are drawn as in training
(``evaldata.load_eval_domains``: fixed seed per shot), so a run's own meta-test numbers are
reproduced exactly, and the optional random-init baseline is scored on the same episodes.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import jax

from free_jax import checkpointing, data as data_lib
from free_jax.evaluation import TRANSDUCTIVE_NOTE, EvalResult
from free_jax.models.learner import MetaLearner, create_meta_learner
from free_jax.training import evaldata
from free_jax.training.config import step_config
from free_jax.training.run_setup import (
    meta_learner_input,
    random_init_meta_learner,
    state_constructor,
    train_metadata,
)
from free_jax.training.validate import validate_config
from free_jax.zoo.store import Zoo

WHICH = ("best", "latest")


@dataclasses.dataclass(frozen=True)
class SavedEvaluation:
    """Results of ``evaluate_saved``: shot -> domain -> EvalResult ("mean" over domains if several)."""

    split: str
    which: str
    step: int                                         # training iteration of the checkpoint
    episodes: int
    free: dict[int, dict[str, EvalResult]]
    random_init: dict[int, dict[str, EvalResult]] | None

    def table(self, way: int) -> str:
        """Markdown table: one row per (shot, domain), with the baseline column if it was run."""
        columns = ["setting", "domain", "FREE (ours)"] + (["random init"] if self.random_init else [])
        lines = [f"{self.which} meta-learner (iteration {self.step}), split {self.split!r}, "
                 f"{self.episodes} episodes per setting, mean ± 95 % CI; {TRANSDUCTIVE_NOTE}.", "",
                 "| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
        for shot, by_domain in self.free.items():
            for domain, result in by_domain.items():
                row = f"| {way}-way {shot}-shot | {domain} | {result} |"
                if self.random_init:
                    row += f" {self.random_init[shot][domain]} |"
                lines.append(row)
        return "\n".join(lines) + "\n"


def load_saved_meta_learner(config, workdir: str | Path, which: str = "best") -> tuple[MetaLearner, int]:
    """The meta-learner saved by a run in ``workdir`` and the iteration it was saved at.

    Args:
      config: the run's configuration (same model, image size, datasets, zoo).
      workdir: the run's --workdir (holds ``checkpoints/``; ``zoo/`` unless ``config.zoo_path``).
      which: "best" (selected on meta-validation) or "latest" (newest whole training state).

    Raises:
      CheckpointError: no such checkpoint, or it was written for another configuration.
    """
    if which not in WHICH:
        raise ValueError(f"which={which!r}; choose one of {WHICH}")
    workdir = Path(workdir).absolute()
    directory = workdir / "checkpoints"
    if not directory.is_dir():
        raise checkpointing.CheckpointError(f"no checkpoints in {workdir}: is it the --workdir of a FREE run?")
    zoo = Zoo.load(config.zoo_path or workdir / "zoo")
    image_shape, mean, std = meta_learner_input(config, zoo.specs)   # as the training loop: from the zoo
    meta_learner = create_meta_learner(jax.random.key(config.seed), config.meta_arch, config.way, image_shape,
                                       mean, std, config.meta_width)
    checkpoints = checkpointing.TrainingCheckpoints(directory, config.keep_checkpoints)
    try:
        if which == "best":
            abstract = jax.eval_shape(lambda: meta_learner.params)
            restored = checkpoints.restore_best(abstract)
            if restored is None:
                raise checkpointing.CheckpointError(
                    f"no best checkpoint under {directory / 'best'} (meta-validation never ran: the run stopped "
                    "during warm-up?); use which='latest' (--which=latest)")
            params, metadata = restored
            return meta_learner.replace_params(params), int(metadata.get("step", checkpoints.best_step()))
        if checkpoints.latest_step() is None:
            raise checkpointing.CheckpointError(f"no training-state checkpoint under {directory / 'latest'}")
        abstract_state = jax.eval_shape(state_constructor(config, zoo, image_shape, mean, std, step_config(config)))
        state, metadata = checkpoints.restore(abstract_state)
        if metadata.get("config") != train_metadata(config):
            raise checkpointing.CheckpointError(
                f"checkpoint in {workdir} was written for {metadata.get('config')}, this config is "
                f"{train_metadata(config)}; pass the config the run was trained with")
        return state.meta_learner, int(state.step)
    finally:
        checkpoints.close()


def evaluate_saved(config, workdir: str | Path, split: str = "test", shots=(1, 5), episodes: int = 600,
                   which: str = "best", baseline: bool = False) -> SavedEvaluation:
    """Scores a saved meta-learner on ``episodes`` fixed ``split`` episodes per shot and domain.

    Each episode: ``config.eval.steps`` SGD steps at ``config.eval.lr`` on the support set from θ,
    then query accuracy; results are mean ± 1.96·std/√episodes (percent), per domain and, with
    several domains, their mean.

    Args:
      config: the run's configuration.
      workdir: the run's --workdir.
      split: "train", "val" or "test" (meta-train / meta-val / meta-test classes).
      shots: K of the N-way K-shot episodes (N = config.way, config.eval.query queries per class).
      episodes: number of episodes per shot.
      which: "best" or "latest" (see ``load_saved_meta_learner``).
      baseline: also score a randomly initialised meta-learner (the training loop's random-init
        baseline) on the same episodes.
    """
    validate_config(config)
    if split not in data_lib.SPLITS:
        raise ValueError(f"split={split!r}; choose one of {data_lib.SPLITS}")
    shots = tuple(int(s) for s in shots)
    if not shots or min(shots) < 1:
        raise ValueError(f"shots={shots}: give one or more shot counts ≥ 1")
    if isinstance(episodes, bool) or int(episodes) != episodes or episodes < 1:
        raise ValueError(f"episodes={episodes!r} is invalid: an integer ≥ 1")
    meta_learner, step = load_saved_meta_learner(config, workdir, which)
    domains = evaldata.load_eval_domains(config, split, shots, episodes)
    free = {shot: evaldata.evaluate_domains(meta_learner, domains, shot, config) for shot in shots}
    random_init = None
    if baseline:
        image_shape = (config.image_size, config.image_size, int(meta_learner.mean.shape[0]))
        initial = random_init_meta_learner(config, image_shape, meta_learner.mean, meta_learner.std)
        random_init = {shot: evaldata.evaluate_domains(initial, domains, shot, config) for shot in shots}
    return SavedEvaluation(split, which, step, episodes, free, random_init)
