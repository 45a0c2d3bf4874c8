"""`machine` for the virtual device: the unix port's own, plus reset() like a board's.

A reset ends the process with the reboot status; the host launcher starts it again on the
same console pty and flash image.
"""

from umachine import *  # noqa: F401,F403

REBOOT_EXIT = 75


def reset():
    raise SystemExit(REBOOT_EXIT)


def soft_reset():
    raise SystemExit(REBOOT_EXIT)


def unique_id():
    return b"virtual0"
