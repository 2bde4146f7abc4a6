"""Installs free_jax: a JAX/Flax implementation of FREE (data-free meta-learning)."""
import re
from pathlib import Path

from setuptools import find_packages, setup

_VERSION = re.search(r'__version__ = "([^"]+)"',
                     Path(__file__).with_name("free_jax").joinpath("__init__.py").read_text()).group(1)

# Fonts for the embedded glyph benchmark are ordinary pip packages: nothing is downloaded at run time.
_FONT_PACKAGES = [
    "fontpkg-noto-sans",            # Latin, Greek, Cyrillic
    "fontpkg-noto-serif",
    "fontpkg-fira-sans",            # Latin, Greek, Cyrillic (static weights + italics)
    "fontpkg-rubik",                # Latin, Cyrillic, Hebrew
    "fontpkg-caveat",               # handwriting: Latin, Cyrillic
    "fontpkg-kalam",                # handwriting: Latin, Devanagari
    "fontpkg-noto-sans-arabic",
    "fontpkg-noto-kufi-arabic",
    "fontpkg-amiri",                # Arabic naskh
    "fontpkg-noto-sans-devanagari",
    "fontpkg-mukta",                # Devanagari
    "fontpkg-baloo-2",              # Devanagari
    "fontpkg-noto-sans-khmer",
    "fontpkg-noto-sans-tamil",
    "fontpkg-catamaran",            # Tamil
    "fontpkg-noto-sans-telugu",
    "fontpkg-anek-telugu",
    "fontpkg-ramabhadra",           # Telugu
    "fontpkg-noto-sans-thai",
    "fontpkg-kanit",                # Thai
    "fontpkg-sarabun",              # Thai
    "fontpkg-frank-ruhl-libre",     # Hebrew
    "fontpkg-heebo",                # Hebrew
    "fontpkg-assistant",            # Hebrew
    "fontpkg-hind-siliguri",        # Bengali
]

setup(
    name="free_jax",
    version=_VERSION,
    description="FREE (Faster and Better Data-Free Meta-Learning, CVPR 2024) in JAX/Flax",
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["free_jax", "free_jax.*"]),
    install_requires=[
        "jax>=0.6",
        "flax>=0.10",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11",
        "chex>=0.1.88",
        "tensorflow-datasets>=4.9.6",
        "absl-py>=2.1",
        "ml_collections>=0.1.1",
        "numpy>=1.26",
        "pillow>=10.0",
        "tensorboardX>=2.6",
        "matplotlib>=3.8",              # comparison plots (experiments/compare.py)
        *_FONT_PACKAGES,
    ],
    extras_require={
        # The linter runs with the tests (.ci/run); its version is pinned so its verdict is stable.
        # pytest < 9: pytest-xdist 3.8's --dist loadgroup (tests/conftest.py) has no effect on pytest 9.
        "test": ["pytest>=8.0,<9", "pytest-xdist>=3.5", "ruff>=0.17,<0.18"],
        # Reading prepared TFDS tfrecord datasets (cifar100, caltech_birds2011) needs TensorFlow.
        "tfds": ["tensorflow-cpu>=2.16"],
    },
)
