"""Episode sampling and the evaluation protocol."""
import jax
import numpy as np
import pytest

from free_jax import evaluation
from free_jax.data.base import SplitData
from free_jax.data.episodes import build_class_index, episode_tasks, sample_episode_indices
from free_jax.models.learner import create_meta_learner


def colour_split(num_classes=8, per_class=20, size=16, seed=0):
    """Each class is a distinct flat colour plus noise: trivially learnable from one shot."""
    rng = np.random.default_rng(seed)
    colours = rng.uniform(0, 255, (num_classes, 3))
    images = colours[:, None, None, None, :] + rng.normal(0, 8, (num_classes, per_class, size, size, 3))
    images = np.clip(images, 0, 255).astype(np.uint8).reshape(-1, size, size, 3)
    labels = np.repeat(np.arange(num_classes), per_class).astype(np.int32)
    return SplitData(images, labels, tuple(f"c{i}" for i in range(num_classes)), (0.5,) * 3, (0.25,) * 3,
                     "colours", "test")


def test_confidence_interval_matches_hand_computation():
    accuracies = np.array([20.0, 40.0, 60.0, 80.0])
    mean, ci = evaluation.confidence_interval(accuracies)
    assert mean == 50.0
    assert ci == pytest.approx(1.96 * np.sqrt(500.0) / 2.0)  # population std √500, √E = 2


def test_episodes_are_fixed_by_seed_and_well_formed():
    split = colour_split()
    first = evaluation.make_episodes(split, num_episodes=50, way=5, shot=2, query=3, seed=7)
    again = evaluation.make_episodes(split, num_episodes=50, way=5, shot=2, query=3, seed=7)
    other = evaluation.make_episodes(split, num_episodes=50, way=5, shot=2, query=3, seed=8)
    np.testing.assert_array_equal(first.indices, again.indices)
    assert not np.array_equal(first.indices, other.indices)
    for episode in first.indices:
        classes = split.labels[episode]                     # (way, shot + query)
        assert (classes == classes[:, :1]).all()            # one class per row
        assert len(set(classes[:, 0])) == 5                 # distinct classes
        assert len(set(episode.ravel())) == episode.size    # no image twice
    tasks = episode_tasks(split.images[first.indices[:2]], shot=2)
    assert tasks.support_x.shape == (2, 10, 16, 16, 3) and tasks.query_x.shape == (2, 15, 16, 16, 3)
    np.testing.assert_array_equal(tasks.support_y[0], [0, 0, 1, 1, 2, 2, 3, 3, 4, 4])


def test_sampling_skips_small_classes_and_errors_when_too_few():
    labels = np.array([0] * 5 + [1] * 1 + [2] * 5 + [3] * 5)
    index = build_class_index(labels)
    indices = np.asarray(sample_episode_indices(jax.random.key(0), index, 30, 3, 2, 2))
    assert not np.isin(5, indices)                          # class 1 has only one image
    with pytest.raises(ValueError, match="only 3 classes hold at least 4"):
        sample_episode_indices(jax.random.key(0), index, 1, 4, 2, 2)


def test_adaptation_beats_chance_and_chunking_does_not_change_results():
    split = colour_split()
    episodes = evaluation.make_episodes(split, num_episodes=10, way=5, shot=1, query=3, seed=0)
    learner = create_meta_learner(jax.random.key(0), "conv4", 5, (16, 16, 3), split.mean, split.std, width=8)
    result = evaluation.evaluate(learner, split.images, episodes, steps=5, lr=0.1, chunk_size=4)
    assert result.mean > 60.0  # chance is 20 % (76 % measured)
    again = evaluation.evaluate(learner, split.images, episodes, steps=5, lr=0.1, chunk_size=3, strategy="lax_map")
    np.testing.assert_allclose(result.accuracies, again.accuracies, atol=1e-4)
    assert result.accuracies.shape == (10,)


def test_scanned_adaptation_scores_what_the_unrolled_one_does():
    split = colour_split()
    episodes = evaluation.make_episodes(split, num_episodes=6, way=5, shot=1, query=3, seed=3)
    learner = create_meta_learner(jax.random.key(1), "conv4", 5, (16, 16, 3), split.mean, split.std, width=8)
    unrolled = evaluation.evaluate(learner, split.images, episodes, steps=5, lr=0.1, chunk_size=3)
    scanned = evaluation.evaluate(learner, split.images, episodes, steps=5, lr=0.1, chunk_size=3, inner_loop="scan")
    np.testing.assert_allclose(scanned.accuracies, unrolled.accuracies, atol=1e-4)
    assert unrolled.mean > 20.0                 # adapted: chance is 20 %, the colours are trivial
    with pytest.raises(ValueError, match=r"inner_loop='while' is invalid: one of \('unroll', 'scan'\)"):
        evaluation.evaluate(learner, split.images, episodes, steps=5, inner_loop="while")


def test_one_compiled_program_serves_every_learning_rate_split_and_learner():
    """A tuning grid of inner lrs compiles once per step count (lr is an argument of the program),
    and so do other splits (another image count: val vs test, another domain) and learners that
    come committed to the device (a restored checkpoint) or not (a fresh init)."""
    split = colour_split()
    episodes = evaluation.make_episodes(split, num_episodes=4, way=5, shot=1, query=2, seed=1)
    learner = create_meta_learner(jax.random.key(0), "conv4", 5, (16, 16, 3), split.mean, split.std, width=8)
    evaluation._chunk_accuracies.clear_cache()
    results = [evaluation.evaluate(learner, split.images, episodes, steps=2, lr=lr) for lr in (0.0, 0.1, 0.3)]
    assert evaluation._chunk_accuracies._cache_size() == 1
    other = colour_split(num_classes=6, per_class=12, seed=1)                   # 72 images, not 160
    other_episodes = evaluation.make_episodes(other, num_episodes=4, way=5, shot=1, query=2, seed=2)
    committed = jax.device_put(learner, jax.devices()[0])
    evaluation.evaluate(committed, other.images, other_episodes, steps=2, lr=0.1)
    assert evaluation._chunk_accuracies._cache_size() == 1
    unadapted = evaluation.evaluate(learner, split.images, episodes, steps=0, lr=0.1)
    np.testing.assert_array_equal(results[0].accuracies, unadapted.accuracies)   # lr 0 adapts nothing
    assert results[1].accuracies.tolist() != results[0].accuracies.tolist() or \
        results[2].accuracies.tolist() != results[0].accuracies.tolist()         # the lr is used
