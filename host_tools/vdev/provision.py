"""Put a door's files on a running virtual device through its console (the real mpremote).

Everything is staged and switched in one step at the next boot (host_tools/door_stage.py),
so a power cut leaves the old door or the new one. Used by the demo, the tests and the HIL
rig to give a virtual door its configuration, its key file and its whitelist cache
(docs/virtual-device.md).
"""

from __future__ import annotations

import json
from typing import Any

# The console's own mpremote (host_tools/console.py), for callers that import it from here.
from host_tools.console import mpremote as mpremote


def provision(pty: str, config: dict[str, Any] | None = None, keys: dict[str, Any] | None = None,
              cache: bytes | None = None, extra: dict[str, bytes] | None = None) -> None:
    """Configuration (config.json), door key file (keys.json) and whitelist snapshot
    (cache/main.bin), as one transaction (host_tools/door_stage.py) that the firmware applies
    as it boots: restart the device afterwards. A new whitelist drops the old one's pending
    changes and version floor, as `doorctl commission` does. `extra`: more files by path
    (a TLS CA file, say), in the same transaction."""
    from host_tools.door_stage import Transaction

    files: dict[str, bytes] = dict(extra or {})
    remove: list[str] = []
    if cache is not None:
        files["cache/main.bin"] = cache
        remove += ["cache/overlay.bin", "cache/floor"]
    if keys is not None:
        files["keys.json"] = json.dumps(keys).encode()
    if config is not None:
        files["config.json"] = json.dumps(config).encode()
    if files:
        Transaction(pty, files, remove).run()
