"""Device configuration: defaults, overridden by config.json on the flash.

The file is written atomically by the commissioning tool (temp file + rename), so a power
cut leaves the old or the new configuration. Keys and secrets are not here: they live in
the key store.
"""

import json

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
