"""Tests of the HIL rig itself (its drivers, rig files, I/O board and loopback bench), not of a
door: run with the suite, never packaged."""
