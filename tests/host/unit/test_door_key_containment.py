"""Containment of a stolen door (docs/threat-model.md, "After a theft"): door key epochs and
`doorctl card keys revoke-door` (host_tools/cards/sitekeys.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from crypto import keyupdate
from crypto.hmac256 import hmac_sha256
from host_tools.cards import sitekeys
from host_tools.errors import UserError

DOORCTL = str(Path(sys.executable).with_name("doorctl"))


def _opens(update_key_hex: str, device: str, args: dict[str, Any]) -> bool:
    key = bytes.fromhex(update_key_hex)
    try:
        keyupdate.open_sealed(lambda m: hmac_sha256(key, m), device, args)
    except keyupdate.SealError:
        return False
    return True


def test_a_revoked_doors_update_key_opens_no_later_key_update() -> None:
    """The stolen door's `update` key must not open the key update sent to its id after the
    rotation (it carries the new site-wide door_read key)."""
    site = sitekeys.new_site_keys(7)
    stolen = sitekeys.device_keys(site, "hz.b1.d1")
    sitekeys.revoke_door(site, "hz.b1.d1")
    sitekeys.rotate(site)
    sealed = sitekeys.sealed_update(site, "hz.b1.d1")
    assert not _opens(stolen["keys"]["update"], "hz.b1.d1", sealed)
    replacement = sitekeys.device_keys(site, "hz.b1.d1")
    assert _opens(replacement["keys"]["update"], "hz.b1.d1", sealed)


def test_a_replacement_under_the_same_id_gets_keys_the_stolen_one_lacks() -> None:
    site = sitekeys.new_site_keys(7)
    stolen = sitekeys.device_keys(site, "hz.b1.d1")
    other = sitekeys.device_keys(site, "hz.b1.d2")
    sitekeys.revoke_door(site, "hz.b1.d1")
    sitekeys.rotate(site)
    replacement = sitekeys.device_keys(site, "hz.b1.d1")
    for slot in ("command", "cache", "update"):
        assert stolen["keys"][slot] != replacement["keys"][slot]
    assert sitekeys.door_key(site, "command", "hz.b1.d1").hex() == replacement["keys"]["command"]
    # the other doors keep their keys: nothing to re-commission but the stolen one
    after = sitekeys.device_keys(site, "hz.b1.d2")
    assert all(other["keys"][s] == after["keys"][s] for s in ("command", "cache", "update"))


def test_epoch_one_keeps_the_keys_doors_already_hold() -> None:
    site = sitekeys.new_site_keys(7)
    prov = bytes.fromhex(site["keys"]["provision"])
    assert sitekeys.door_update_key(site, "hz.b1.d1") == hmac_sha256(prov, b"Uhz.b1.d1")
    assert sitekeys.door_key(site, "cache", "hz.b1.d1") == sitekeys.door_key(site, "cache", "hz.b1.d1", 1)


def test_twice_revoked_never_comes_back_to_an_old_epoch() -> None:
    site = sitekeys.new_site_keys(7)
    seen = {sitekeys.door_key(site, "command", "d1")}
    for _ in range(3):
        sitekeys.revoke_door(site, "d1")
        seen.add(sitekeys.door_key(site, "command", "d1"))
    assert len(seen) == 4 and sitekeys.revoked(site) == {"d1": [1, 2, 3]}


def test_no_key_file_or_update_for_a_revoked_epoch() -> None:
    """A site file whose epoch was not moved on (restored from an old copy, edited) makes no
    keys for the stolen id: commissioning and `platform command … keys` refuse it."""
    site = sitekeys.new_site_keys(7)
    site["revoked"] = {"hz.b1.d1": [1]}
    for make in (lambda: sitekeys.device_keys(site, "hz.b1.d1"),
                 lambda: sitekeys.sealed_update(site, "hz.b1.d1")):
        with pytest.raises(UserError, match="revoked"):
            make()
    assert sitekeys.device_keys(site, "hz.b1.d2")["device"] == "hz.b1.d2"


def test_revoke_door_command(tmp_path: Path) -> None:
    path = tmp_path / "site.json"
    sitekeys.write_secret(path, sitekeys.new_site_keys(7))
    out = subprocess.run([DOORCTL, "card", "keys", "revoke-door", "hz.b1.d1", "--keys", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.strip().splitlines()) == 1 and "revoked" in out.stdout
    site = json.loads(path.read_text())
    assert sitekeys.door_epoch(site, "hz.b1.d1") == 2 and sitekeys.revoked(site) == {"hz.b1.d1": [1]}
    assert all(v not in out.stdout + out.stderr for v in site["keys"].values())
    bad = subprocess.run([DOORCTL, "card", "keys", "revoke-door", "no/such", "--keys", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
    door = tmp_path / "door.json"
    sitekeys.write_secret(door, sitekeys.device_keys(site, "hz.b1.d2"))
    refused = subprocess.run([DOORCTL, "card", "keys", "revoke-door", "hz.b1.d2", "--keys", str(door)],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "site key file" in refused.stderr


def test_the_platform_signs_for_a_revoked_id_with_its_new_epoch_once_it_registers() -> None:
    """`revoke-door` while the platform runs: the replacement's registration makes the
    platform read the site file, and from then on nothing it signs for that id verifies with
    the stolen keys."""
    from reference_platform.door_signing import DoorSigner

    site = sitekeys.new_site_keys(7)
    on_disk = json.loads(json.dumps(site))
    signer = DoorSigner(json.loads(json.dumps(site)), reload=lambda: json.loads(json.dumps(on_disk)))
    signer.RELOAD_EVERY_S = 0.0
    stolen = sitekeys.door_key(site, "command", "hz.b1.d1")
    assert signer.key("command", "hz.b1.d1") == stolen
    sitekeys.revoke_door(on_disk, "hz.b1.d1")
    assert signer.registered("hz.b1.d1", "door") is True and not signer.disputed
    assert signer.key("command", "hz.b1.d1") == sitekeys.door_key(on_disk, "command", "hz.b1.d1") != stolen
    assert signer.registered("hz.b1.d2", "door") is False
