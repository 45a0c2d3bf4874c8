"""Test-suite wiring: device tests under MicroPython, fixtures shared by host tests."""

pytest_plugins = ["tests.mpy_plugin"]
