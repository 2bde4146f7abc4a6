"""Keeps library chatter (Orbax/absl INFO lines) out of the progress output of the binaries."""
import logging

from absl import logging as absl_logging


def quiet_library_logs() -> None:
    """Warnings and errors only, from absl and Orbax."""
    absl_logging.set_verbosity(absl_logging.WARNING)
    for name in ("absl", "orbax", "jax._src.distributed"):
        logging.getLogger(name).setLevel(logging.WARNING)
