"""Options shared by the test suite (tests/) and the end-to-end suite (hil/).

`--image unix32` runs the MicroPython side on the 32-bit firmware image (built into build/
when missing or stale, `doorctl build unix32`) instead of the PyPI 64-bit interpreter: the
device and shared tests' MicroPython items, and the virtual doors of the hil/ suite. The
CPython halves of the shared tests do not involve the image and are deselected then.
`--image mcu` runs the shared tests on the bare-metal image under QEMU (docs/mcu.md).
"""

from __future__ import annotations

import os

import pytest

from host_tools.vdev.device import IMAGE_ENV, IMAGES


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--image", choices=(*IMAGES, "mcu"), default=os.environ.get(IMAGE_ENV) or "pypi",
                     help=f"the MicroPython the device-side tests and virtual doors run on "
                          f"(default: ${IMAGE_ENV}, else pypi)")


def pytest_configure(config: pytest.Config) -> None:
    # Fixtures, benchmarks helpers and subprocesses read the choice from the environment.
    os.environ[IMAGE_ENV] = config.getoption("--image")


def pytest_report_header(config: pytest.Config) -> str:
    return f"MicroPython image: {config.getoption('--image')}"
