"""Options shared by the test suite (tests/) and the end-to-end suite (hil/).

`--image unix32` runs the MicroPython side on the 32-bit firmware image (built into build/
when missing or stale, `doorctl build unix32`) instead of the PyPI 64-bit interpreter: the
device and shared tests' MicroPython items, and the virtual doors of the hil/ suite. The
CPython halves of the shared tests do not involve the image and are deselected then.
`--image mcu` runs the shared tests on the bare-metal image under QEMU (docs/mcu.md).
"""

from __future__ import annotations

import os
import signal

import pytest
from hypothesis import settings

from host_tools.vdev.device import IMAGE_ENV, IMAGES

# Started in the background by a non-interactive shell (`… &`), a process inherits SIGINT
# ignored, and so would every command a test starts: the tests that press Ctrl-C on a command
# would see it carry on. Handled here, SIGINT is back to the default in those commands.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# No time limit per example: a deadline is a timed assertion, and on a loaded machine (two test
# workers on two cores, CI) a codec example that took 20 ms alone can take 400 ms.
settings.register_profile("doorctl", deadline=None)
settings.load_profile("doorctl")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--image", choices=(*IMAGES, "mcu"), default=os.environ.get(IMAGE_ENV) or "pypi",
                     help=f"the MicroPython the device-side tests and virtual doors run on "
                          f"(default: ${IMAGE_ENV}, else pypi)")


def pytest_configure(config: pytest.Config) -> None:
    # Fixtures, benchmarks helpers and subprocesses read the choice from the environment.
    os.environ[IMAGE_ENV] = config.getoption("--image")


def pytest_report_header(config: pytest.Config) -> str:
    return f"MicroPython image: {config.getoption('--image')}"
