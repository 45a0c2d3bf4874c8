"""Device configuration: defaults, overridden by config.json on the flash.

The file is written atomically, by the commissioning tool and by `write_changes` for the
platform's `config` command (temp file + rename), so a power cut leaves the old or the new
configuration. Keys and secrets are not here: they live in
the key store.
"""

import json
import os

DEFAULTS = {
    "device_id": "unset",
    "broker": None,  # {"host": ..., "port": 1883, "user": ..., "ca": "ca.pem"}
    "patrol_interval_s": 300,
}


def broker_tls(broker):
    """The broker entry asks for TLS (commissioned with --tls-ca; `ssl`/`tls` from older
    configurations): the uplink then builds a verifying context (firmware/tlsconf.py)."""
    return bool(broker.get("ca") or broker.get("ssl") or broker.get("tls"))


def load(fs_root):
    cfg = dict(DEFAULTS)
    path = fs_root.rstrip("/") + "/config.json"
    try:
        with open(path) as f:
            data = json.load(f)
        if isinstance(data, dict):
            cfg.update(data)
    except (OSError, ValueError):
        pass
    return cfg


# Top-level keys a `config` command may change; every other commanded key is a door timing.
TOP_LEVEL = ("patrol_interval_s",)


def write_changes(fs_root, changes):
    """Persist commanded changes (already checked, firmware/commands.py check_config) in
    config.json: door timings under "door", the others at the top. Temp file + rename, so
    a cut leaves the old file or the new one, never a torn one."""
    cfg = load(fs_root)
    door = dict(cfg.get("door") or {})
    for k in changes:
        if k in TOP_LEVEL:
            cfg[k] = changes[k]
        else:
            door[k] = changes[k]
    cfg["door"] = door
    path = fs_root.rstrip("/") + "/config.json"
    with open(path + ".tmp", "w") as f:
        f.write(json.dumps(cfg))
    os.rename(path + ".tmp", path)
