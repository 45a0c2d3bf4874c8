"""A signed `keys` command's sealed door key file, taken into use (docs/threat-model.md,
docs/protocol.md "Commands"): opened with this door's update key (crypto/keyupdate.py),
checked against the held file, written as keys.json and swapped into the held key store."""

import json
import os


def apply(ks, fs_root, device_id, args):
    """"" when the sealed file in `args` replaced the held one, else why not. Newer than the
    one held, for this site and scope; written temp file + rename (a power cut leaves the old
    file or the new one) and taken into use at once (`ks` is changed in place)."""
    from crypto.keystore import KeyStoreError, SoftwareKeyStore
    from crypto.keyupdate import SealError, open_sealed

    if ks is None or not ks.has("update"):
        return "no_keys"
    try:
        gen, plain = open_sealed(lambda m: ks.hmac("update", m), device_id, args)
        text = bytes(plain).decode()
        new = SoftwareKeyStore.from_dict(json.loads(text))
    except SealError as e:
        return e.reason
    except (ValueError, TypeError, KeyError, KeyStoreError):
        return "bad_field:keys"
    if new.site_id != ks.site_id or new.generation != gen or not new.has("update"):
        return "bad_field:keys"
    if gen <= ks.generation:
        return "key_generation"
    if new.scope != ks.scope or new.device != ks.device:
        # The stored whitelist is signed with the held cache key (the same in every key file of
        # one scope) and the platform signs for the keys this door registered with: moving to
        # per-door keys, or to another door's, is a commissioning.
        return "key_scope"
    path = fs_root.rstrip("/") + "/keys.json"
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)
    ks.replace(new)
    return ""
