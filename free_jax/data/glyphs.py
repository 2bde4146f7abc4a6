"""The embedded ``glyphs`` benchmark: an Omniglot-like few-shot set rendered from real fonts.

Classes are characters of 11 writing systems (``glyph_alphabets``), split by alphabet into
meta-train / meta-val / meta-test. Each class gets ``renderings_per_class`` jittered renderings
(font family, weight, width, italic, rotation, scale, translation, stroke, blur, noise and
colours; see ``glyph_render``). Generation is deterministic for a (version, parameters) pair,
runs once, and is cached (``cache.py``): ``$FREE_JAX_CACHE_DIR`` or ``~/.cache/free_jax``.

Two styles are registered: ``glyphs`` (solid strokes, flat colours) and ``glyphs_outline``
(hollow strokes on textured backgrounds), a second domain for the multi-domain scenario.

Preview (look at it): ``python -m free_jax.data.glyphs --preview out.png``.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import time
from pathlib import Path

import numpy as np
from PIL import Image

from free_jax.data import cache, glyph_alphabets, glyph_render
from free_jax.data.base import SplitData
from free_jax.progress import ProgressLine

GENERATOR_VERSION = 2  # Bump whenever rendering changes: it keys the cache.
SPLITS = ("train", "val", "test")
STYLES = ("solid", "outline")
DEFAULT_RENDERINGS = 60


@dataclasses.dataclass(frozen=True)
class GlyphClass:
    """One class: a character of an alphabet and the font files that contain it."""

    alphabet: str
    char: str
    font_files: tuple[Path, ...]

    @property
    def name(self) -> str:
        return f"{self.alphabet}/{self.char} U+{ord(self.char):04X}"


@functools.lru_cache(maxsize=None)
def glyph_classes(split: str) -> tuple[GlyphClass, ...]:
    """The classes of a split in label order; characters no installed font has are dropped."""
    classes = []
    for alphabet in glyph_alphabets.split_alphabets(split):
        packages = [glyph_render.package_font_files(pkg) for pkg in alphabet.font_packages]
        for char in alphabet.characters:
            # The files of one package are one family (weights, italics) with one character
            # set; checking its first and last file keeps this fast (a few seconds).
            usable = tuple(f for files in packages if files
                           and glyph_render.font_has_char(files[0], char)
                           and glyph_render.font_has_char(files[-1], char) for f in files)
            if usable:
                classes.append(GlyphClass(alphabet.name, char, usable))
            else:
                logging.warning("glyphs: no installed font renders %r (%s); class dropped",
                                char, alphabet.name)
    if not classes:
        raise RuntimeError("glyphs: no fonts found; reinstall free_jax (fontpkg-* dependencies)")
    return tuple(classes)


def _font_fingerprint() -> list[list]:
    """Names and sizes of every font file used: a different font set is a different dataset."""
    packages = sorted({p for a in glyph_alphabets.ALPHABETS.values() for p in a.font_packages})
    return [[pkg, f.name, f.stat().st_size] for pkg in packages
            for f in glyph_render.package_font_files(pkg)]


def render_class(split: str, class_index: int, count: int, image_size: int, channels: int,
                 seed: int, style: str, first: int = 0) -> np.ndarray:
    """Renderings ``first .. first+count-1`` of one class: uint8 (count, size, size, channels).

    Each rendering has its own random stream (seed, version, split, class, rendering), so the
    result does not depend on how the work is batched or parallelised.
    """
    glyph_class = glyph_classes(split)[class_index]
    out = np.empty((count, image_size, image_size, channels), np.uint8)
    for i in range(count):
        rng = np.random.default_rng([seed, GENERATOR_VERSION, SPLITS.index(split),
                                     STYLES.index(style), class_index, first + i])
        font_file = glyph_class.font_files[int(rng.integers(len(glyph_class.font_files)))]
        out[i] = glyph_render.render_glyph(rng, glyph_class.char, font_file, image_size,
                                           channels, style)
    return out


def _generate(image_size: int, channels: int, seed: int, renderings: int, style: str, stream=None):
    """Renders every split, showing a progress line (classes done, rate, ETA) on ``stream``
    (default stderr): a first use takes tens of seconds, once per (version, parameters)."""
    arrays = {}
    counts = {split: len(glyph_classes(split)) for split in SPLITS}
    what = f"{style} glyphs {image_size}x{image_size}x{channels}, {renderings} per class"
    line = ProgressLine(sum(counts.values()), name="glyphs", unit="classes", stream=stream)
    line.update(0, f"rendering {what} (once; then cached)")
    done, shown_at = 0, line.elapsed()
    for split in SPLITS:
        rendered = []
        for c in range(counts[split]):
            rendered.append(render_class(split, c, renderings, image_size, channels, seed, style))
            done += 1
            if line.elapsed() - shown_at >= 0.5:     # a few updates a second at most
                line.update(done, f"{split} split")
                shown_at = line.elapsed()
        arrays[f"{split}_images"] = np.concatenate(rendered)
        arrays[f"{split}_labels"] = np.repeat(np.arange(counts[split], dtype=np.int32), renderings)
    train = arrays["train_images"].astype(np.float64) / 255.0
    arrays["mean"] = train.mean(axis=(0, 1, 2))
    arrays["std"] = train.std(axis=(0, 1, 2))
    line.update(done, f"rendered {what} in {line.elapsed():.1f} s")
    line.newline()
    return arrays


def cache_params(image_size: int, channels: int, seed: int, renderings: int, style: str) -> dict:
    return {"generator_version": GENERATOR_VERSION, "image_size": image_size,
            "channels": channels, "seed": seed, "renderings_per_class": renderings,
            "style": style, "classes": {s: [c.name for c in glyph_classes(s)] for s in SPLITS},
            "fonts": _font_fingerprint()}


def load_glyphs(split: str, data_dir: str | None = None, *, image_size: int = 32,
                channels: int = 3, seed: int = 0, renderings_per_class: int = DEFAULT_RENDERINGS,
                style: str = "solid") -> SplitData:
    """Loads (generating and caching on first use) one split of the glyph benchmark.

    Args:
      split: "train", "val" or "test" (meta-train / meta-val / meta-test alphabets).
      data_dir: cache root; defaults to ``$FREE_JAX_CACHE_DIR`` or ``~/.cache/free_jax``.
      image_size: side in pixels (32 matches CIFAR-FS; 28 for fast CPU runs).
      channels: 3 (random colours) or 1 (grey levels).
      seed: generation seed; same seed and version give the same images.
      renderings_per_class: images per class.
      style: "solid" (dataset ``glyphs``) or "outline" (dataset ``glyphs_outline``).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {SPLITS}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if image_size < 8 or renderings_per_class < 1:
        raise ValueError(f"need image_size >= 8 and renderings_per_class >= 1, got "
                         f"{image_size}, {renderings_per_class}")
    params = cache_params(image_size, channels, seed, renderings_per_class, style)
    arrays = cache.cached_arrays(
        "glyphs", params,
        lambda: _generate(image_size, channels, seed, renderings_per_class, style), root=data_dir)
    return SplitData(
        images=arrays[f"{split}_images"], labels=arrays[f"{split}_labels"],
        class_names=tuple(c.name for c in glyph_classes(split)),
        mean=tuple(float(m) for m in arrays["mean"]), std=tuple(float(s) for s in arrays["std"]),
        name="glyphs" if style == "solid" else "glyphs_outline", split=split)


def load_glyphs_outline(split: str, data_dir: str | None = None, *, image_size: int = 32, channels: int = 3,
                        seed: int = 0, renderings_per_class: int = DEFAULT_RENDERINGS) -> SplitData:
    """``load_glyphs`` with ``style="outline"``: the registered ``glyphs_outline`` domain."""
    return load_glyphs(split, data_dir, image_size=image_size, channels=channels, seed=seed,
                       renderings_per_class=renderings_per_class, style="outline")


def preview_grid(classes_per_split: int = 4, renderings: int = 10, image_size: int = 32,
                 channels: int = 3, seed: int = 0, style: str = "solid",
                 zoom: int = 3) -> np.ndarray:
    """A uint8 RGB grid: one row per sampled class (from each split), one column per rendering."""
    rows = []
    for split in SPLITS:
        n_classes = len(glyph_classes(split))
        picks = np.random.default_rng([seed, 99]).choice(n_classes, classes_per_split, replace=False)
        for c in sorted(picks):
            imgs = render_class(split, int(c), renderings, image_size, channels, seed, style)
            imgs = np.pad(imgs, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=255)
            rows.append(np.concatenate(list(imgs), axis=1))
    grid = np.concatenate(rows, axis=0)
    grid = np.repeat(np.repeat(grid, zoom, axis=0), zoom, axis=1)
    return np.repeat(grid, 3, axis=2) if grid.shape[2] == 1 else grid


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preview", help="write a PNG grid of sample classes x renderings")
    parser.add_argument("--generate", action="store_true", help="generate (or load) the cache")
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3, choices=(1, 3))
    parser.add_argument("--style", default="solid", choices=STYLES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--renderings_per_class", type=int, default=DEFAULT_RENDERINGS)
    parser.add_argument("--data_dir", default=None, help="cache root")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for split in SPLITS:
        classes = glyph_classes(split)
        per_alphabet = {}
        for c in classes:
            per_alphabet[c.alphabet] = per_alphabet.get(c.alphabet, 0) + 1
        print(f"{split}: {len(classes)} classes {per_alphabet}")
    if args.preview:
        grid = preview_grid(image_size=args.image_size, channels=args.channels, seed=args.seed,
                            style=args.style)
        Image.fromarray(grid).save(args.preview)
        print(f"wrote {args.preview} ({grid.shape[1]}x{grid.shape[0]})")
    if args.generate:
        start = time.perf_counter()
        data = load_glyphs("train", args.data_dir, image_size=args.image_size,
                           channels=args.channels, seed=args.seed,
                           renderings_per_class=args.renderings_per_class, style=args.style)
        params = cache_params(args.image_size, args.channels, args.seed, args.renderings_per_class, args.style)
        print(f"ready in {time.perf_counter() - start:.1f} s: train {data.images.shape}, "
              f"mean {np.round(data.mean, 3)}, std {np.round(data.std, 3)}, cache "
              f"{cache.entry_dir('glyphs', params, args.data_dir)}")


if __name__ == "__main__":
    main()
