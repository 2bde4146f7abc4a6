"""Renders one character as a small image, with font, geometry, stroke, colour and noise jitter.

Fonts are the TTF/OTF files shipped inside installed ``fontpkg_*`` packages (their ``files/``
folder); nothing is fetched. ``font_has_char`` lets callers keep, per character, only the
font files that really contain it (its rendering differs from the font's ``.notdef`` box), so
no class is a "tofu" box.
"""
from __future__ import annotations

import functools
import importlib.util
import itertools
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

_FONT_SUFFIXES = (".ttf", ".otf")
_CHECK_SIZE = 20
_MISSING_CHAR = "\U0010FFFD"  # A private-use code point no font maps: renders as .notdef.
# Static weights whose strokes vanish at 28-32 px (variable fonts are clipped likewise).
_TOO_THIN = ("thin", "hairline", "extralight")


@functools.lru_cache(maxsize=None)
def package_font_files(package: str) -> tuple[Path, ...]:
    """Sorted font files of an installed ``fontpkg_*`` package (empty if not installed)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return ()
    root = Path(next(iter(spec.submodule_search_locations)))
    return tuple(sorted(p for p in root.rglob("*") if p.suffix.lower() in _FONT_SUFFIXES
                        and not any(w in p.name.lower() for w in _TOO_THIN)))


@functools.lru_cache(maxsize=None)
def variation_axes(font_file: Path) -> tuple[tuple[float, float, str], ...]:
    """(min, max, name) of each variation axis of a variable font; () for a static font."""
    try:
        axes = _font(font_file, _CHECK_SIZE).get_variation_axes()
    except (OSError, AttributeError):
        return ()
    return tuple((float(a["minimum"]), float(a["maximum"]), _axis_name(a["name"])) for a in axes)


def _axis_name(name) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


def _raw_mask(font: ImageFont.FreeTypeFont, char: str, stroke: int = 0,
              hollow: bool = False) -> np.ndarray:
    """The character drawn white on black, centred on a canvas that does not clip it (3 em
    wide: the widest classes, e.g. Tamil ஔ, are about 2 em). ``hollow``: only the outline
    ring of width ``stroke`` (FreeType's stroker draws it, then the glyph body is cleared)."""
    size = 3 * int(font.size) + 4 * stroke
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).text((size // 2, size // 2), char, font=font, fill=0 if hollow else 255,
                                anchor="mm", stroke_width=stroke, stroke_fill=255)
    return np.asarray(canvas)


@functools.lru_cache(maxsize=256)
def _font(font_file: Path, size: int) -> ImageFont.FreeTypeFont:
    """A cached font object: creating one parses the font's tables (milliseconds)."""
    # Single code points need no shaping: the basic layout is faster than raqm.
    return ImageFont.truetype(str(font_file), size, layout_engine=ImageFont.Layout.BASIC)


@functools.lru_cache(maxsize=None)
def _notdef_mask(font_file: Path) -> bytes:
    return _raw_mask(_font(font_file, _CHECK_SIZE), _MISSING_CHAR).tobytes()


def font_has_char(font_file: Path, char: str) -> bool:
    """Whether the font renders ``char`` as a real glyph (not empty, not the .notdef box)."""
    mask = _raw_mask(_font(font_file, _CHECK_SIZE), char)
    return bool(mask.max() > 0) and mask.tobytes() != _notdef_mask(font_file)


@functools.lru_cache(maxsize=None)
def _instance_grid(font_file: Path, outline: bool) -> tuple[tuple[float, ...], ...]:
    """Fixed variation instances of a variable font (() for a static one): 3 weights x 2
    widths when it has a width axis, else 5 weights; other axes at their midpoint."""
    axes = variation_axes(font_file)
    has_width = any(name.lower().startswith("width") for _, _, name in axes)
    choices = []
    for lo, hi, name in axes:
        if name.lower().startswith("weight"):
            # Hairline weights vanish at 28-32 px; hollow strokes need some body.
            lo, hi = max(lo, 500.0 if outline else 250.0), min(hi, 850.0)
            choices.append(tuple(float(w) for w in np.linspace(lo, max(lo, hi),
                                                              3 if has_width else 5)))
        elif name.lower().startswith("width"):
            choices.append((max(lo, 75.0), hi))
        else:
            choices.append(((lo + hi) / 2,))
    return tuple(itertools.product(*choices)) if axes else ()


@functools.lru_cache(maxsize=512)
def _font_instance(font_file: Path, size: int, index: int, outline: bool):
    """One fixed variation instance of a variable font, kept: FreeType's first rendering after
    a variation change costs ~40 ms, later ones ~0.2 ms, so instances are never re-varied."""
    font = ImageFont.truetype(str(font_file), size, layout_engine=ImageFont.Layout.BASIC)
    grid = _instance_grid(font_file, outline)
    if grid:
        font.set_variation_by_axes(list(grid[index]))
    return font


def _random_font(rng: np.random.Generator, font_file: Path, size: int, outline: bool):
    count = max(1, len(_instance_grid(font_file, outline)))
    return _font_instance(font_file, size, int(rng.integers(count)), outline)


def glyph_mask(rng: np.random.Generator, char: str, font_file: Path, image_size: int,
               outline: bool = False) -> np.ndarray:
    """Coverage mask in [0, 1], float32 (image_size, image_size), of one jittered rendering.

    Jitter: font weight/width (variable fonts), stroke thickening, rotation (±15°), aspect,
    scale (glyph box 55-85 % of the image) and translation (inside the image), small blur.
    """
    hi_res = 2 * image_size  # Render at 2x, then box-filter down: clean anti-aliasing.
    font = _random_font(rng, font_file, int(2 * image_size), outline)
    if outline:  # A ring of 2-4 px (at 2x) around each stroke: hollow at the final size.
        mask = Image.fromarray(_raw_mask(font, char, int(rng.integers(2, 5)), hollow=True))
    else:
        mask = Image.fromarray(_raw_mask(font, char, int(rng.choice([0, 0, 0, 1, 1, 2]))))
    if rng.random() < 0.15 and not outline:  # Occasionally thinner strokes than the font's.
        thinner = mask.filter(ImageFilter.MinFilter(3))
        if np.asarray(thinner).sum() > 0.4 * np.asarray(mask).sum():
            mask = thinner
    box = mask.getbbox()
    if box is None:
        raise ValueError(f"{char!r} renders empty with {font_file.name}")
    glyph = mask.crop(box).rotate(float(rng.uniform(-15, 15)), resample=Image.BILINEAR, expand=True)
    width, height = glyph.size
    aspect = float(np.exp(rng.uniform(-0.15, 0.15)))
    width, height = width * aspect, height / aspect
    scale = float(rng.uniform(0.55, 0.85)) * hi_res / max(width, height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    glyph = glyph.resize((new_w, new_h), Image.BILINEAR)
    canvas = Image.new("L", (hi_res, hi_res), 0)
    x = int(rng.integers(0, hi_res - new_w + 1))
    y = int(rng.integers(0, hi_res - new_h + 1))
    canvas.paste(glyph, (x, y))
    if rng.random() < 0.3:
        canvas = canvas.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0))))
    small = canvas.resize((image_size, image_size), Image.BOX)
    return np.asarray(small, np.float32) / 255.0


_LUMA = np.array([0.299, 0.587, 0.114])


def _luminance(colour: np.ndarray) -> np.ndarray:
    """Luminance of (..., channels) colours in [0, 1]; grey levels are their own luminance."""
    return colour @ _LUMA if colour.shape[-1] == 3 else colour[..., 0]


def _contrasting_colours(rng: np.random.Generator, channels: int, min_contrast: float = 0.4):
    """A random (foreground, background) pair whose luminances differ by >= min_contrast."""
    while True:
        fg, bg = rng.uniform(0, 1, (2, 32, channels))
        ok = np.flatnonzero(np.abs(_luminance(fg) - _luminance(bg)) >= min_contrast)
        if ok.size:
            return fg[ok[0]], bg[ok[0]]


@functools.lru_cache(maxsize=8)
def _unit_grid(image_size: int) -> np.ndarray:
    return np.mgrid[0:image_size, 0:image_size].astype(np.float32) / image_size


def _texture(rng: np.random.Generator, image_size: int, channels: int, fg: np.ndarray):
    """A random background texture (stripes, checks or blobs) in two colours far from ``fg``."""
    yy, xx = _unit_grid(image_size)
    kind = rng.integers(3)
    if kind == 0:  # Stripes of random orientation and frequency.
        angle, freq = rng.uniform(0, np.pi), rng.uniform(2, 6)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)))
    elif kind == 1:  # Checks.
        cells = rng.integers(3, 8)
        t = ((np.floor(xx * cells) + np.floor(yy * cells)) % 2).astype(np.float32)
    else:  # Smooth blobs: bilinear upsampling of a coarse random grid.
        coarse = Image.fromarray((rng.uniform(0, 1, (4, 4)) * 255).astype(np.uint8))
        t = np.asarray(coarse.resize((image_size, image_size), Image.BICUBIC), np.float32) / 255
    # Background colours sit on the far side of the foreground's luminance.
    lo, hi = (0.5, 1.0) if float(_luminance(fg)) < 0.5 else (0.0, 0.5)
    c1, c2 = rng.uniform(lo, hi, channels), rng.uniform(lo, hi, channels)
    return c1 + (c2 - c1) * t[..., None]


def render_glyph(rng: np.random.Generator, char: str, font_file: Path, image_size: int,
                 channels: int, style: str = "solid") -> np.ndarray:
    """One uint8 (image_size, image_size, channels) rendering of ``char``.

    ``style="solid"``: random contrasting foreground/background colours (grey levels when
    ``channels == 1``); ``style="outline"``: hollow strokes over a random texture.
    """
    outline = style == "outline"
    mask = glyph_mask(rng, char, font_file, image_size, outline=outline)[..., None]
    if outline:  # A dark or a light foreground (channels in [0, .35] or [.65, 1]).
        fg = rng.uniform(0.0, 0.35, channels) + (0.65 if rng.random() < 0.5 else 0.0)
        background = _texture(rng, image_size, channels, fg)
    else:
        fg, bg = _contrasting_colours(rng, channels)
        background = np.broadcast_to(bg, (image_size, image_size, channels))
    image = background * (1.0 - mask) + fg * mask
    image = image + rng.normal(0.0, rng.uniform(0.0, 0.06), image.shape)
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
