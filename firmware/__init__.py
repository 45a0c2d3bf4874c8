"""Door-controller firmware (MicroPython)."""

VERSION = "0.1.0"
