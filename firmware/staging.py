"""Commissioning as one transaction on the door's flash (docs/installer-guide.md).

`doorctl commission` writes every new file (identity, keys, broker, TLS files, whitelist)
beside its target as TARGET.stage, where nothing reads it, then writes the commit record
stage.json by temporary file and rename: that rename is the switch. Without the record the
door is the old door; with it, complete() renames each staged file over its target (which
replaces the target whole) and removes what the new door must not keep, then removes the
record. Boot runs it before anything reads those files, so a cut half-way is finished at the
next boot: the door is the old one or the new one, never keys of one site with the whitelist
of another.

Every rename stays inside one folder: littlefs moves an entry between folders in two
commits, and the power-cut test (tests/device/test_staging_powercut.py) lost a neighbouring
entry of the source folder when the power went between them.
"""

import json
import os

SUFFIX = ".stage"
RECORD = "stage.json"
# Replacement temporaries of older commissioning tools: never read, only confusing.
LEFTOVERS = ("keys.json.tmp", "config.json.tmp", "ca.pem.tmp", "client.crt.tmp",
             "client.key.tmp", "cache/main.bin.tmp", RECORD + ".tmp")


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def pending(root):
    """The committed plan not yet applied ({"put": [target, ...], "remove": [...]}), or None."""
    try:
        with open(root.rstrip("/") + "/" + RECORD) as f:
            plan = json.load(f)
    except (OSError, ValueError):
        return None
    return plan if isinstance(plan, dict) else None


def complete(root):
    """Apply a committed transaction (idempotent: a cut here is finished next time).
    Returns the number of files moved into place, or -1 when nothing was committed."""
    root = root.rstrip("/")
    plan = pending(root)
    for name in LEFTOVERS:
        _remove(root + "/" + name)
    if plan is None:
        _remove(root + "/" + RECORD)  # unreadable: cannot come from the rename
        return -1
    moved = 0
    for target in plan.get("put", ()):
        path = root + "/" + target
        if _exists(path + SUFFIX):  # gone: moved before a cut
            os.rename(path + SUFFIX, path)
            moved += 1
    for target in plan.get("remove", ()):
        _remove(root + "/" + target)
    os.remove(root + "/" + RECORD)
    return moved
