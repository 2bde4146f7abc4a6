"""The recovered-image PNG grid (free_jax.inversion.grid)."""
import numpy as np
import pytest
from PIL import Image

from free_jax.inversion.grid import confidence_label, inversion_rows, recovered_grid_png, teacher_rows


@pytest.mark.parametrize("confidence, label", [(0.364, ".36"), (0.0, ".00"), (0.996, "1.00"),
                                               (1.0, "1.00"), (0.994, ".99")])
def test_confidence_label_rounds_before_shortening(confidence, label):
    assert confidence_label(confidence) == label


def test_grid_has_one_row_per_class_run_and_shows_each_image_scaled(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(6, 4, 4, 1)).astype(np.float32)
    labels = np.array([7, 7, 7, 3, 3, 9])
    grid = recovered_grid_png(images, labels, np.full(6, 0.9), tmp_path / "g.png",
                              samples_per_row=2, scale=10)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "g.png").convert("RGB")), grid)
    cell_h = 4 * 10 + 11
    assert grid.shape == (3 * cell_h + 2, 48 + 2 * (4 * 10 + 2), 3)      # rows: 7, 3, 9
    # Row 0, column 1 holds image 1 (the third 7 is dropped: two per row), nearest-upscaled.
    tile = grid[1:41, 48 + 42:48 + 82, 0]
    expected = np.clip(images[1, ..., 0] * 255 + 0.5, 0, 255).astype(np.uint8)
    assert np.array_equal(tile, np.kron(expected, np.ones((10, 10), np.uint8)))


def test_teacher_rows_sorts_by_target_stably():
    images = np.arange(4)[:, None, None, None].astype(np.float32)
    out_images, out_labels, _ = teacher_rows(images, np.ones(4), np.array([5, 6, 5, 6]),
                                             np.array([0, 1, 0, 1]))
    assert out_images[:, 0, 0, 0].tolist() == [0, 2, 1, 3] and out_labels.tolist() == [5, 5, 6, 6]


def test_grid_rejects_mismatched_shapes(tmp_path):
    with pytest.raises(ValueError, match="labels"):
        recovered_grid_png(np.zeros((2, 4, 4, 1)), np.zeros(3), np.zeros(2), tmp_path / "x.png")


def test_rows_name_their_teacher_and_mark_a_teacher_drawn_twice(tmp_path):
    """A draw of teachers 3, 5 and 3 again (3 and 3 stacked in one group, 5 in another): rows are
    titled T<id> c<class>, the second 3 is marked a repeat, and teacher 3's last class (11), which is
    also teacher 5's first, still gives two rows, not one merged row."""
    targets = np.array([0, 1, 0, 1])
    labels = {3: [10, 11, 10, 11], 5: [11, 12, 11, 12]}
    images = lambda ids: np.stack([np.full((4, 4, 4, 1), i / 10, np.float32) for i in ids])
    groups = [[3, 3], [5]]
    rows = inversion_rows([images(g) for g in groups], [np.array([labels[i] for i in g]) for g in groups],
                          [np.full((len(g), 4), 0.9) for g in groups], targets, groups)
    titles = rows[4]
    assert titles == ["T3 c10", "T3 c11", "T3 c10 (repeat 1)", "T3 c11 (repeat 1)", "T5 c11", "T5 c12"]
    groups = [[3], [5]]
    images5, labels5, conf5, keys5, titles5 = inversion_rows(
        [images(g) for g in groups], [np.array([labels[i] for i in g]) for g in groups],
        [np.full((1, 4), 0.9) for _ in groups], targets, groups)
    assert titles5 == ["T3 c10", "T3 c11", "T5 c11", "T5 c12"]
    grid = recovered_grid_png(images5, labels5, conf5, tmp_path / "g.png", samples_per_row=2, scale=10,
                              row_titles=titles5, row_keys=keys5)
    assert grid.shape[0] == 4 * (4 * 10 + 11) + 2                 # four rows: c11 of T3 and of T5 apart
    with pytest.raises(ValueError, match="1 teacher ids for a group of 2"):
        inversion_rows([images([3, 3])], [np.array([labels[3]] * 2)], [np.ones((2, 4))], targets, [[3]])
