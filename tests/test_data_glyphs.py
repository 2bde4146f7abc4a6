"""Tests of the embedded glyph benchmark: counts, split by alphabet, determinism, cache, learnability."""
import json
import os

import numpy as np
import pytest

from free_jax.data import cache, glyph_alphabets, glyph_render, glyphs, load_multidomain, load_split

SMALL = dict(image_size=16, channels=1, renderings_per_class=3)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every test gets an empty cache unless it passes a shared data_dir explicitly."""
    monkeypatch.setenv(cache.CACHE_ENV_VAR, str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory):
    """A cache shared by the tests below, so the small glyph set is generated once."""
    return str(tmp_path_factory.mktemp("glyph_cache"))


def test_split_by_alphabet_counts_and_disjointness():
    alphabets = {s: {c.alphabet for c in glyphs.glyph_classes(s)} for s in glyphs.SPLITS}
    assert sum(len(a) for a in alphabets.values()) >= 8
    assert not (alphabets["train"] & alphabets["val"] or alphabets["train"] & alphabets["test"]
                or alphabets["val"] & alphabets["test"])
    for split, names in glyph_alphabets.ALPHABET_SPLIT.items():
        assert alphabets[split] == set(names)  # Every alphabet kept at least one class.
    names = [c.name for s in glyphs.SPLITS for c in glyphs.glyph_classes(s)]
    assert len(names) == len(set(names)) >= 300
    assert all(len(glyphs.glyph_classes(s)) >= 40 for s in glyphs.SPLITS)
    assert glyphs.DEFAULT_RENDERINGS >= 40


def test_font_check_rejects_missing_characters():
    latin = glyph_render.package_font_files("fontpkg_noto_sans")[0]
    khmer = glyph_render.package_font_files("fontpkg_noto_sans_khmer")[0]
    assert glyph_render.font_has_char(latin, "Ж")
    assert not glyph_render.font_has_char(latin, "ក")  # Would be a tofu box.
    assert glyph_render.font_has_char(khmer, "ក")
    for split in glyphs.SPLITS:
        for glyph_class in glyphs.glyph_classes(split)[::25]:
            assert all(glyph_render.font_has_char(f, glyph_class.char) for f in glyph_class.font_files)


def test_wide_glyphs_are_not_clipped():
    tamil_wide = next(c for c in glyphs.glyph_classes("val") if c.char == "ஔ")
    for font_file in tamil_wide.font_files:
        font = glyph_render._font_instance(font_file, 64, 0, False)
        mask = glyph_render._raw_mask(font, tamil_wide.char, stroke=2)
        border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
        assert mask.max() > 0 and not border.any(), font_file.name


def test_load_split_shapes_labels_and_normalisation(shared_dir):
    for split in glyphs.SPLITS:
        data = load_split("glyphs", split, data_dir=shared_dir, **SMALL)
        n_classes = len(glyphs.glyph_classes(split))
        assert data.images.shape == (n_classes * 3, 16, 16, 1) and data.images.dtype == np.uint8
        np.testing.assert_array_equal(np.bincount(data.labels), np.full(n_classes, 3))
        assert data.num_classes == n_classes and data.split == split and data.name == "glyphs"
        assert 0.3 < data.mean[0] < 0.7 and 0.15 < data.std[0] < 0.45
        assert data.images.std() > 20  # Not blank.


def test_default_shape_is_cifar_like():
    images = glyphs.render_class("train", 0, 2, image_size=32, channels=3, seed=0, style="solid")
    assert images.shape == (2, 32, 32, 3)
    assert np.abs(images[..., 0].astype(int) - images[..., 1]).mean() > 1  # Coloured.


def test_deterministic_and_seed_dependent():
    a = glyphs.render_class("val", 5, 4, 28, 1, seed=0, style="solid")
    b = glyphs.render_class("val", 5, 4, 28, 1, seed=0, style="solid")
    c = glyphs.render_class("val", 5, 4, 28, 1, seed=1, style="solid")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # Batching does not change a rendering: rendering 3 alone equals rendering 3 of a batch.
    np.testing.assert_array_equal(glyphs.render_class("val", 5, 1, 28, 1, 0, "solid", first=3), a[3:])
    # Renderings of one class differ from each other (jitter), not copies.
    assert all(not np.array_equal(a[0], a[i]) for i in range(1, 4))


def test_cache_hit_and_corrupt_or_partial_cache_is_regenerated(tmp_path, monkeypatch):
    root = str(tmp_path / "c")
    first = load_split("glyphs", "val", data_dir=root, **SMALL)
    entry = cache.entry_dir("glyphs", glyphs.cache_params(16, 1, 0, 3, "solid"), root)
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["params"]["generator_version"] == glyphs.GENERATOR_VERSION
    with monkeypatch.context() as patch:      # a cache hit reads the archive, renders nothing
        patch.setattr(glyphs, "render_class", lambda *a, **k: pytest.fail("re-rendered a cached split"))
        again = load_split("glyphs", "val", data_dir=root, **SMALL)
    np.testing.assert_array_equal(first.images, again.images)
    # Corrupt: flip bytes in the middle of the archive.
    data_file = entry / "data.npz"
    raw = bytearray(data_file.read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 64] = bytes(64)
    data_file.write_bytes(bytes(raw))
    np.testing.assert_array_equal(load_split("glyphs", "val", data_dir=root, **SMALL).images,
                                  first.images)
    assert json.loads((entry / "manifest.json").read_text())["sha256"] == manifest["sha256"]
    # Partial: manifest missing (a writer killed before finishing).
    os.remove(entry / "manifest.json")
    np.testing.assert_array_equal(load_split("glyphs", "val", data_dir=root, **SMALL).images,
                                  first.images)
    assert (entry / "manifest.json").exists()


def test_cache_dir_comes_from_environment(tmp_path):
    assert cache.cache_root() == tmp_path / "cache"
    load_split("glyphs", "test", **SMALL)
    assert list((tmp_path / "cache" / "glyphs").glob("*/manifest.json"))


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="channels"):
        load_split("glyphs", "train", channels=2)
    with pytest.raises(ValueError, match="valid splits"):
        load_split("glyphs", "meta_train")


def _probe_features(images):
    """Polarity-free stroke maps (|x - background|), average-pooled at two scales."""
    x = images.astype(np.float32) / 255.0
    strokes = np.abs(x - np.median(x.reshape(len(x), -1), axis=1)[:, None, None, None])
    n = len(x)
    fine = strokes.reshape(n, 14, 2, 14, 2).mean((2, 4)).reshape(n, -1)
    coarse = strokes.reshape(n, 7, 4, 7, 4).mean((2, 4)).reshape(n, -1)
    feats = np.concatenate([fine, 2 * coarse], axis=1)
    return feats / (np.linalg.norm(feats, axis=1, keepdims=True) + 1e-6)


@pytest.mark.parametrize("offset", [3, 20])
def test_classes_are_learnable_by_a_linear_probe(offset):
    """Softmax regression on 75 renderings of 5 meta-train classes, tested on 25 held-out ones."""
    n_classes, per_class, n_train = 5, 100, 75
    images = np.concatenate([glyphs.render_class("train", c * 47 + offset, per_class, 28, 1, 0,
                                                 "solid") for c in range(n_classes)])
    labels = np.repeat(np.arange(n_classes), per_class)
    feats = _probe_features(images)
    train = np.tile(np.arange(per_class) < n_train, n_classes)
    weights, bias, onehot = np.zeros((feats.shape[1], n_classes)), np.zeros(n_classes), np.eye(n_classes)
    for _ in range(500):
        logits = feats[train] @ weights + bias
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        grad = (probs - onehot[labels[train]]) / train.sum()
        weights -= 5.0 * feats[train].T @ grad
        bias -= 5.0 * grad.sum(0)
    accuracy = ((feats[~train] @ weights + bias).argmax(1) == labels[~train]).mean()
    assert accuracy >= 0.4, accuracy  # Chance is 0.2; measured 0.48-0.53.


def test_outline_domain_and_multidomain(shared_dir):
    solid = load_split("glyphs", "test", data_dir=shared_dir, **SMALL)
    outline = load_split("glyphs_outline", "test", data_dir=shared_dir, **SMALL)
    assert outline.name == "glyphs_outline" and outline.class_names == solid.class_names
    assert not np.array_equal(outline.images, solid.images)
    md = load_multidomain(["glyphs", "glyphs_outline"], "test", data_dir=shared_dir,
                          options={"glyphs": SMALL, "glyphs_outline": SMALL})
    n = solid.num_classes
    assert md.class_offsets == (0, n) and md.num_classes_total == 2 * n
    assert set(md.global_labels(0)).isdisjoint(md.global_labels(1))
    assert md.means == (solid.mean, outline.mean)


def test_preview_cli_writes_png(tmp_path, capsys):
    out = tmp_path / "preview.png"
    glyphs.main(["--preview", str(out), "--image_size", "16", "--channels", "1"])
    from PIL import Image
    with Image.open(out) as image:
        assert image.size[0] > 100 and image.size[1] > 100
    assert "train:" in capsys.readouterr().out


def test_first_rendering_shows_progress_and_a_cached_load_is_quiet(tmp_path, monkeypatch, capsys):
    """A first use renders every class (tens of seconds at full size): a progress line names what is
    rendered, counts classes and ends with the seconds taken; a cached load prints nothing."""
    monkeypatch.setattr(glyphs, "render_class", lambda split, c, count, size, channels, *_: np.zeros(
        (count, size, size, channels), np.uint8))                 # the line is under test, not rendering
    total = sum(len(glyphs.glyph_classes(s)) for s in glyphs.SPLITS)
    glyphs.load_glyphs("val", str(tmp_path), image_size=8, channels=1, renderings_per_class=2)
    err = capsys.readouterr().err
    assert "[glyphs] 0/" in err and "rendering solid glyphs 8x8x1, 2 per class" in err
    assert f"[glyphs] {total}/{total} classes" in err and "rendered solid glyphs 8x8x1, 2 per class in" in err
    glyphs.load_glyphs("test", str(tmp_path), image_size=8, channels=1, renderings_per_class=2)
    assert "[glyphs]" not in capsys.readouterr().err
