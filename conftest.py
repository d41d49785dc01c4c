"""Test-suite set-up shared by the unit tests and the nbval notebook runs."""
import os

from course_lib.notebooks import KERNEL_ENV

# Every notebook kernel inherits this environment: the CPU as device (so a machine with a GPU
# reproduces the stored CPU outputs) and a fixed hash seed.
os.environ.update(KERNEL_ENV)


def pytest_configure(config):
    # On a fresh install matplotlib builds its font cache on first import and says so on stderr,
    # which nbval would report as an unexpected output of the first notebook: build it now.
    import matplotlib.font_manager  # noqa: F401
