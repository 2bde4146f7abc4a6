"""The alphabets of the embedded ``glyphs`` benchmark and its split by alphabet.

Like Omniglot's background/evaluation split, meta-train, meta-val and meta-test are split
*by writing system*: a test character comes from a script never seen in meta-training.

Each alphabet lists its characters (one class per character) and the ``fontpkg_*`` Python
packages whose fonts render it (installed as ordinary dependencies, see ``setup.py``).
Characters were chosen so that no two classes in one split look the same: Latin, Greek and
Cyrillic letters that are homoglyphs of each other (A/Α/А, P/Ρ/Р, Г/Γ, ...) and lower-case
letters that are small copies of their capitals (c/C, o/O, ...) are left out. A character that
none of an alphabet's fonts contains is dropped at generation time (no "tofu" boxes), so
the class counts below are upper bounds; ``glyphs.glyph_classes()`` gives the real ones.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Alphabet:
    """One writing system: its characters (classes) and the font packages that render it."""

    name: str
    characters: str
    font_packages: tuple[str, ...]


def _chars(*ranges: tuple[int, int], extra: str = "", skip: str = "") -> str:
    """Characters of inclusive code-point ranges, plus ``extra``, minus ``skip``."""
    out = [chr(c) for lo, hi in ranges for c in range(lo, hi + 1)] + list(extra)
    return "".join(c for c in out if c not in skip)


_LATIN_FONTS = ("fontpkg_noto_sans", "fontpkg_noto_serif", "fontpkg_fira_sans", "fontpkg_rubik",
                "fontpkg_caveat", "fontpkg_kalam")

ALPHABETS: dict[str, Alphabet] = {a.name: a for a in (
    # ---- meta-train scripts ----
    Alphabet("latin", "ABCDEFGHIJKLMNOPQRSTUVWXYZ" + "abdefghijmnqrty", _LATIN_FONTS),
    Alphabet("greek", "ΓΔΛΞΠΣΦΨΩ" + "αβγδεζηθλμξπρσςτφχψω",
             ("fontpkg_noto_sans", "fontpkg_noto_serif", "fontpkg_fira_sans")),
    Alphabet("cyrillic", "БДЖЗИЙЛЦЧШЩЪЫЬЭЮЯ" + "ЁЄЂЋЉЊЏҐЎ" + "б",
             ("fontpkg_noto_sans", "fontpkg_noto_serif", "fontpkg_fira_sans", "fontpkg_rubik",
              "fontpkg_caveat")),
    Alphabet("arabic", "ابتثجحخدذرزسشصضطظعغفقكلمنهوي" + "ءة" + "٢٣٤٦٩",
             ("fontpkg_noto_sans_arabic", "fontpkg_noto_kufi_arabic", "fontpkg_amiri")),
    Alphabet("devanagari", _chars((0x0905, 0x090B), (0x090F, 0x0910), (0x0913, 0x0914),
                                  (0x0915, 0x0928), (0x092A, 0x0930), (0x0932, 0x0932),
                                  (0x0935, 0x0939), (0x0967, 0x096F)),
             ("fontpkg_noto_sans_devanagari", "fontpkg_kalam", "fontpkg_mukta", "fontpkg_baloo_2")),
    Alphabet("thai", _chars((0x0E01, 0x0E2E), (0x0E51, 0x0E59)),
             ("fontpkg_noto_sans_thai", "fontpkg_kanit", "fontpkg_sarabun")),
    # ---- meta-val scripts ----
    Alphabet("hebrew", _chars((0x05D0, 0x05EA)),
             ("fontpkg_frank_ruhl_libre", "fontpkg_heebo", "fontpkg_rubik", "fontpkg_assistant")),
    Alphabet("tamil", _chars((0x0B85, 0x0B8A), (0x0B8E, 0x0B90), (0x0B92, 0x0B95), (0x0B99, 0x0B9A),
                             (0x0B9C, 0x0B9C), (0x0B9E, 0x0B9F), (0x0BA3, 0x0BA4), (0x0BA8, 0x0BAA),
                             (0x0BAE, 0x0BB9), extra="ஃ"),
             ("fontpkg_noto_sans_tamil", "fontpkg_catamaran")),
    # ---- meta-test scripts ----
    Alphabet("bengali", _chars((0x0985, 0x098B), (0x098F, 0x0990), (0x0993, 0x09A8), (0x09AA, 0x09B0),
                               (0x09B2, 0x09B2), (0x09B6, 0x09B9), (0x09E7, 0x09EF)),
             ("fontpkg_hind_siliguri",)),
    Alphabet("telugu", _chars((0x0C05, 0x0C0B), (0x0C0E, 0x0C10), (0x0C12, 0x0C14), (0x0C15, 0x0C28),
                              (0x0C2A, 0x0C39)),
             ("fontpkg_noto_sans_telugu", "fontpkg_anek_telugu", "fontpkg_ramabhadra")),
    Alphabet("khmer", _chars((0x1780, 0x17A2), (0x17E1, 0x17E9)),
             ("fontpkg_noto_sans_khmer",)),
)}

# The split by alphabet. Order matters: it fixes the class indices within each split.
ALPHABET_SPLIT: dict[str, tuple[str, ...]] = {
    "train": ("latin", "greek", "cyrillic", "arabic", "devanagari", "thai"),
    "val": ("hebrew", "tamil"),
    "test": ("bengali", "telugu", "khmer"),
}


def split_alphabets(split: str) -> tuple[Alphabet, ...]:
    """The alphabets of one meta-split ("train", "val" or "test")."""
    if split not in ALPHABET_SPLIT:
        raise ValueError(f"unknown split {split!r}; valid splits: {tuple(ALPHABET_SPLIT)}")
    return tuple(ALPHABETS[name] for name in ALPHABET_SPLIT[split])
