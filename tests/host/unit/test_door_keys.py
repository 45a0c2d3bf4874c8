"""Per-door command and cache keys: derivation, the door's key file, commissioning's signed
whitelist, the platform's choice of key per door (host_tools/cards/sitekeys.py,
reference_platform/door_signing.py; docs/threat-model.md)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crypto.hmac256 import hmac_sha256
from crypto.keystore import KeyStoreError, SoftwareKeyStore
from firmware import key_update
from firmware.setup_check import problems as setup_problems
from host_tools.cards import sitekeys
from host_tools.cards.kit import SiteKit
from host_tools.commands.commission import door_files
from host_tools.errors import UserError
from offline_cache import fmt
from reference_platform.door_signing import DoorSigner, retag
from wire import common
from wire.door import encode_register
from wire.platform import decode_register

DEVICE_ID = st.text("abcdefghijklmnopqrstuvwxyz0123456789.-_", min_size=1, max_size=64)


def _site(master: bytes = bytes(range(32))) -> dict[str, Any]:
    site = sitekeys.new_site_keys(7)
    site["keys"]["door_master"] = master.hex()
    return site


def test_the_derivation_is_pinned() -> None:
    """A known answer (HMAC-SHA256 over the label, purpose, device id and version, checked
    with Python's own hmac): the platform and every tool derive what the doors hold."""
    site = _site()
    msg = b"doorctl-door-key/v1|command|hz.b12.d3|\x00\x00\x00\x01"
    assert hmac.new(bytes(range(32)), msg, hashlib.sha256).hexdigest() == \
        "8949fa7a3fc0cf00e8d905c7d8ad1437ff147a41828e4bb247fce0a172d5d034"
    assert sitekeys.door_key(site, "command", "hz.b12.d3").hex() == \
        "8949fa7a3fc0cf00e8d905c7d8ad1437ff147a41828e4bb247fce0a172d5d034"


@given(a=DEVICE_ID, b=DEVICE_ID, version=st.integers(1, 2**32 - 2))
def test_keys_differ_per_door_purpose_and_version(a: str, b: str, version: int) -> None:
    site = _site()
    ka = sitekeys.door_key(site, "command", a, version)
    assert ka != sitekeys.door_key(site, "cache", a, version)
    assert (ka == sitekeys.door_key(site, "command", b, version)) == (a == b)
    assert ka != sitekeys.door_key(site, "command", a, version + 1)
    assert ka not in (bytes.fromhex(site["keys"]["command"]), bytes.fromhex(site["keys"]["cache"]))


def test_a_door_key_file_holds_its_own_keys_and_no_site_secret() -> None:
    site = _site()
    door = sitekeys.device_keys(site, "hz.b1.d1")
    keys = door["keys"]
    assert door["scope"] == "door" and door["device"] == "hz.b1.d1"
    assert not {"door_master", "provision", "app_master"} & set(keys)
    assert keys["command"] == sitekeys.door_key(site, "command", "hz.b1.d1").hex()
    assert keys["cache"] == sitekeys.door_key(site, "cache", "hz.b1.d1").hex()
    secrets = {v for k, v in site["keys"].items() if k != "card_ref" and not k.startswith("door_read")}
    assert not secrets & set(keys.values())  # nothing site-wide but the card keys
    store = SoftwareKeyStore.from_dict(json.loads(json.dumps(door)))
    assert store.scope == "door" and store.device == "hz.b1.d1"
    assert "door" in repr(store) and keys["command"] not in repr(store)
    with pytest.raises(UserError, match="--device-id"):
        sitekeys.device_keys(site)


def test_an_older_site_file_keeps_its_site_wide_keys() -> None:
    site = sitekeys.new_site_keys(8, per_door=False)
    door = sitekeys.device_keys(site)
    assert "scope" not in door and door["keys"]["command"] == site["keys"]["command"]
    assert sitekeys.signing_key(site, "command", "any.door") == bytes.fromhex(site["keys"]["command"])
    assert SoftwareKeyStore.from_dict(door).scope == "site"


def test_a_key_file_scope_is_checked() -> None:
    door = sitekeys.device_keys(_site(), "hz.b1.d1")
    for bad in ({"scope": "door", "device": None}, {"scope": "room"}, {"scope": "site", "device": "x"}):
        with pytest.raises(KeyStoreError, match="scope"):
            SoftwareKeyStore.from_dict({**door, **bad})


def test_another_doors_key_file_is_a_setup_fault() -> None:
    site = _site()
    cfg = {"device_id": "hz.b1.d2", "site_id": 7}
    mine = SoftwareKeyStore.from_dict(sitekeys.device_keys(site, "hz.b1.d2"))
    other = SoftwareKeyStore.from_dict(sitekeys.device_keys(site, "hz.b1.d1"))
    assert setup_problems(cfg, mine, None) == []
    assert setup_problems(cfg, other, None) == ["keys_door"]


def test_commissioning_signs_the_whitelist_for_that_door() -> None:
    kit = SiteKit(1001, per_door=True)
    snap = kit.snapshot(3, [(b"\x01" * 8, fmt.ACTIVE, False)])
    cfg = kit.door_config("hz.b1.d2")
    files, _ = door_files(kit.keys, cfg, {}, snap)
    main = files["cache/main.bin"]
    body, tag = main[:-32], main[-32:]
    assert body == snap[:-32]
    door_cache = bytes.fromhex(json.loads(files["keys.json"])["keys"]["cache"])
    assert fmt.tags_equal(hmac_sha256(door_cache, body), tag)
    assert not fmt.tags_equal(hmac_sha256(kit.cache_key, body), tag)  # not the site's tag
    assert tag != retag(snap, kit.door_key("cache", "hz.b1.d1"))[-32:]  # nor another door's


def test_the_platform_signs_each_door_with_the_keys_the_site_file_records() -> None:
    site = _site()
    signer = DoorSigner(site)
    own = sitekeys.door_key(site, "command", "hz.b1.d1")
    assert signer.key("command", "hz.b1.d1") == own
    assert signer.registered("hz.b1.d1", "door") is False and not signer.disputed
    assert own.hex() not in repr(signer)
    legacy = DoorSigner(sitekeys.new_site_keys(9, per_door=False))
    assert legacy.key("cache", "x.y") == bytes.fromhex(legacy.site["keys"]["cache"])


@pytest.mark.parametrize("claim", ["site", None])
def test_a_forged_registration_does_not_downgrade_a_per_door_site(claim: str | None) -> None:
    """A retained `register` saying "site" (or without "keys", which decodes as "site")
    published on door B's topic by any broker user: B is still signed for with its own keys
    (else B refuses every time, ack, command and whitelist piece), and the claim is disputed."""
    site = sitekeys.new_site_keys(7)
    signer = DoorSigner(site, reload=lambda: site)
    reg = json.loads(encode_register(7, 2, "0.1.0", "fail-secure", ["desfire_ev2"], False,
                                              False, 0, "door"))
    if claim is None:
        del reg["keys"]
    else:
        reg["keys"] = claim
    keys = decode_register(json.dumps(reg).encode())["keys"]
    assert signer.registered("hz.b1.d2", keys) is False
    for purpose in ("command", "cache"):
        assert signer.key(purpose, "hz.b1.d2") == sitekeys.door_key(site, purpose, "hz.b1.d2")
    assert signer.disputed == {"hz.b1.d2": "site"}
    assert signer.registered("hz.b1.d2", "door") is False and not signer.disputed


def test_a_migrated_site_records_which_doors_hold_their_own_keys() -> None:
    """`card keys per-door` on an older site: every door stays site-wide until commissioned
    (or given its key file) again, whatever a registration says; then its own, for good."""
    site = sitekeys.new_site_keys(12, per_door=False)
    sitekeys.add_door_master(site)
    wide = bytes.fromhex(site["keys"]["command"])
    signer = DoorSigner(json.loads(json.dumps(site)), reload=lambda: json.loads(json.dumps(site)))
    assert signer.key("command", "d1") == wide
    assert signer.registered("d1", "door") is False and signer.disputed == {"d1": "door"}
    assert signer.key("command", "d1") == wide  # a claim moves nothing
    assert sitekeys.record_door_scope(site, "d1") is True  # commissioned again
    assert sitekeys.record_door_scope(site, "d1") is False
    signer.RELOAD_EVERY_S = 0.0
    assert signer.registered("d1", "door") is True and not signer.disputed  # read the file again
    assert signer.key("command", "d1") == sitekeys.door_key(site, "command", "d1")
    assert signer.registered("d1", "site") is False and signer.disputed == {"d1": "site"}
    assert signer.key("command", "d1") == sitekeys.door_key(site, "command", "d1")  # never back


def test_the_registration_says_which_keys_the_door_holds() -> None:
    reg = encode_register(1, 2, "0.1.0", "fail-secure", ["desfire_ev2"], False, False, 0, "door")
    assert decode_register(reg)["keys"] == "door"
    older = json.loads(reg)
    del older["keys"]
    assert decode_register(json.dumps(older).encode())["keys"] == "site"
    older["keys"] = "all"
    with pytest.raises(common.ProtocolError):
        decode_register(json.dumps(older).encode())


def test_a_sealed_key_file_never_changes_the_whitelist_key(tmp_path: Any) -> None:
    """A door on site-wide keys is sent its per-door key file over MQTT: refused (its stored
    whitelist is signed with the site-wide cache key; a commissioning moves it), nothing
    written. The same door's next generation with the same keys is taken."""
    site = _site()
    older = dict(site, keys={k: v for k, v in site["keys"].items() if k != "door_master"})
    held = SoftwareKeyStore.from_dict(sitekeys.device_keys(older, "hz.b1.d1"))
    site["generation"] = older["generation"] = 2
    moved = sitekeys.sealed_update(site, "hz.b1.d1")
    assert key_update.apply(held, str(tmp_path), "hz.b1.d1", moved) == "key_scope"
    assert not (tmp_path / "keys.json").exists() and held.generation == 1 and held.scope == "site"
    same = sitekeys.sealed_update(older, "hz.b1.d1")
    assert key_update.apply(held, str(tmp_path), "hz.b1.d1", same) == ""
    assert held.generation == 2 and (tmp_path / "keys.json").exists()
    assert SoftwareKeyStore.load(str(tmp_path / "keys.json")).generation == 2
    assert not (tmp_path / "keys.json.tmp").exists()


def test_one_doors_key_file_cannot_sign_for_the_site(tmp_path: Any) -> None:
    """The platform and commissioning need the site key file: a per-door key file holds one
    door's keys, so it is refused with one line naming what to use (not used to sign for
    every door, which every other door would refuse)."""
    import subprocess
    import sys
    from pathlib import Path

    door = Path(tmp_path) / "door.json"
    sitekeys.write_secret(door, sitekeys.device_keys(_site(), "hz.b1.d1"))
    with pytest.raises(UserError, match="site key file"):
        sitekeys.load(door, for_doors=True)
    assert sitekeys.load(door)[1].scope == "door"  # as a door's own file it loads
    doorctl = str(Path(sys.executable).with_name("doorctl"))
    out = subprocess.run([doorctl, "commission", "--keys", str(door), "--device-id", "hz.b1.d2",
                          "--door-no", "1", "--broker", "127.0.0.1:1883", "--port", "/dev/null"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "hz.b1.d1's own key file" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_an_older_site_moves_to_per_door_keys(tmp_path: Any) -> None:
    import subprocess
    import sys
    from pathlib import Path

    path = Path(tmp_path) / "site.json"
    site = sitekeys.new_site_keys(12, per_door=False)
    sitekeys.write_secret(path, site)
    doorctl = str(Path(sys.executable).with_name("doorctl"))
    out = subprocess.run([doorctl, "card", "keys", "per-door", "--keys", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    moved = json.loads(path.read_text())
    assert sitekeys.per_door(moved) and moved["keys"]["command"] == site["keys"]["command"]
    assert all(v not in out.stdout + out.stderr for v in moved["keys"].values())
    assert sitekeys.device_keys(moved, "a.b1.d1")["scope"] == "door"
    again = subprocess.run([doorctl, "card", "keys", "per-door", "--keys", str(path)],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already" in again.stderr


def test_a_key_file_is_owner_only_even_beside_a_stale_world_readable_tmp(tmp_path: Path) -> None:
    path = tmp_path / "site.json"
    stale = tmp_path / "site.json.tmp"
    stale.write_text("")
    os.chmod(stale, 0o644)  # left by an older doorctl, or another user's umask
    sitekeys.write_secret(path, sitekeys.new_site_keys(3))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site.json", "site.json.tmp"]


def test_a_key_file_is_never_written_through_a_planted_symlink(tmp_path: Path) -> None:
    path = tmp_path / "site.json"
    elsewhere = tmp_path / "attacker-readable"
    (tmp_path / "site.json.tmp").symlink_to(elsewhere)
    sitekeys.write_secret(path, sitekeys.new_site_keys(3))
    assert not elsewhere.exists()
    assert not path.is_symlink() and "door_master" in path.read_text()


def test_a_failed_key_file_write_leaves_the_old_file_and_no_temporary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "site.json"
    sitekeys.write_secret(path, sitekeys.new_site_keys(3))
    before = path.read_bytes()

    def full_disk(*a: object, **k: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sitekeys.os, "replace", full_disk)
    with pytest.raises(UserError, match="cannot be written"):
        sitekeys.write_secret(path, sitekeys.new_site_keys(4), force=True)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["site.json"]


def test_the_kit_signs_for_its_doors_as_the_platform_does() -> None:
    kit, old = SiteKit(1001, per_door=True), SiteKit(1002)
    snap = kit.snapshot(1, [(b"\x02" * 8, fmt.ACTIVE, False)])
    mine = kit.for_door(snap, "hz.b1.d1")
    assert mine == DoorSigner(kit.keys).whitelist_for("hz.b1.d1", snap) and mine != snap
    assert kit.platform_keys() == {"site_keys": kit.keys}
    assert old.for_door(snap, "hz.b1.d1") == snap and old.platform_keys() == {"ack_key": old.command_key}


def test_a_migrated_sites_rotation_reaches_doors_still_on_site_wide_keys(tmp_path: Any) -> None:
    """Older site -> `card keys per-door` -> `card keys rotate` -> `platform command D keys`:
    a door not commissioned again gets the new door_read version in a site-wide key file (a
    per-door one is refused as key_scope, and after `keys close` it would refuse every re-keyed
    card); a door commissioned again gets its own."""
    site = sitekeys.new_site_keys(12, per_door=False)
    held = SoftwareKeyStore.from_dict(sitekeys.device_keys(site, "hz.b1.d1"))
    sitekeys.add_door_master(site)
    new = sitekeys.rotate(site)
    args = sitekeys.sealed_update(site, "hz.b1.d1")
    assert key_update.apply(held, str(tmp_path), "hz.b1.d1", args) == ""
    # the held store itself is changed: the card task and the gate hold the same object
    assert held.generation == site["generation"] and held.has(sitekeys.slot_name("door_read", new))
    assert held.scope == "site"
    sitekeys.record_door_scope(site, "hz.b1.d2")  # commissioned again: its own keys
    own = SoftwareKeyStore.from_dict(sitekeys.device_keys(site, "hz.b1.d2"))
    assert own.scope == "door"
    sitekeys.close(site)
    (tmp_path / "d2").mkdir()
    assert key_update.apply(own, str(tmp_path / "d2"), "hz.b1.d2",
                            sitekeys.sealed_update(site, "hz.b1.d2")) == ""
    assert own.scope == "door"


def _platform_db(path: Path, site_id: int, doors: dict[str, int | None]) -> str:
    from reference_platform.store import Store

    store = Store(str(path))
    for device, gen in doors.items():
        reg = decode_register(encode_register(
            site_id, 1, "0.1.0", "fail-secure", ["desfire_ev2"], False, False, 0, "site"))
        store.record_registration(device, reg)
        if gen is not None:
            store.record_status(device, {"key_gen": gen})
    return str(path)


def test_keys_close_names_each_door_behind(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "site.json"
    site = sitekeys.new_site_keys(12, per_door=False)
    sitekeys.add_door_master(site)
    sitekeys.rotate(site)
    sitekeys.write_secret(path, site)
    db = _platform_db(tmp_path / "p.db", 12, {"d.behind": 1, "d.done": site["generation"], "d.silent": None})
    doorctl = str(Path(sys.executable).with_name("doorctl"))
    out = subprocess.run([doorctl, "card", "keys", "close", "--keys", str(path), "--db", db],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    warned = [ln for ln in out.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warned) == 2 and "d.behind" in warned[0] and "d.silent" in warned[1]
    assert "d.done" not in out.stderr
    assert all(v not in out.stdout + out.stderr for v in site["keys"].values())


def test_a_disputed_registration_is_an_alarm(tmp_path: Path) -> None:
    from host_tools.commands.platform.cards import alarm_rows
    from reference_platform import scope_alarms
    from reference_platform.store import Store

    store = Store(_platform_db(tmp_path / "p.db", 7, {"hz.b1.d2": None}))
    scope_alarms.record(store, "hz.b1.d2", "site", "door")
    rows = [r for r in alarm_rows(store, None) if r["alarm"] == "key_scope_mismatch"]
    assert [(r["door"], r["claim"], r["record"], r["end"]) for r in rows] == \
        [("hz.b1.d2", "site", "door", None)]
    scope_alarms.record(store, "hz.b1.d2", None, "door")
    assert not [r for r in alarm_rows(store, None) if r["alarm"] == "key_scope_mismatch"]


def test_the_platform_raises_the_alarm_on_a_forged_registration(tmp_path: Path) -> None:
    """What arrives on door B's register topic: stored, signed for by the site file, alarmed."""
    from host_tools.commands.platform.cards import alarm_rows
    from reference_platform.ingest import Platform
    from reference_platform.store import Store

    site = sitekeys.new_site_keys(7)
    store = Store(str(tmp_path / "p.db"))
    p = Platform(store, "127.0.0.1", 1, site_keys=site, lease=False)
    forged = json.loads(encode_register(7, 2, "0.1.0", "fail-secure", ["desfire_ev2"],
                                                 False, False, 0, "door"))
    del forged["keys"]
    p._handle(common.topic("hz.b1.d2", "register"), json.dumps(forged).encode())
    assert p.command_key("hz.b1.d2") == sitekeys.door_key(site, "command", "hz.b1.d2")
    assert [r["door"] for r in alarm_rows(store, None) if r["alarm"] == "key_scope_mismatch"] == ["hz.b1.d2"]
    forged["keys"] = "door"
    p._handle(common.topic("hz.b1.d2", "register"), json.dumps(forged).encode())
    assert not [r for r in alarm_rows(store, None) if r["alarm"] == "key_scope_mismatch"]


def test_a_door_key_file_written_for_a_migrated_site_is_recorded(tmp_path: Path) -> None:
    """`card keys door --device-id` on a site moved to per-door keys gives that door its own
    keys: the site file records it, so the platform signs for it with them (not by its claim)."""
    import subprocess
    import sys

    path = tmp_path / "site.json"
    site = sitekeys.new_site_keys(12, per_door=False)
    sitekeys.add_door_master(site)
    sitekeys.write_secret(path, site)
    doorctl = str(Path(sys.executable).with_name("doorctl"))
    out = subprocess.run([doorctl, "card", "keys", "door", "--keys", str(path), "--device-id", "hz.b1.d4",
                          "--out", str(tmp_path / "d4.json")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    recorded = json.loads(path.read_text())
    assert sitekeys.door_scope(recorded, "hz.b1.d4") == "door"
    assert sitekeys.door_scope(recorded, "hz.b1.d5") == "site"
    door = json.loads((tmp_path / "d4.json").read_text())
    assert door["keys"]["command"] == sitekeys.signing_key(recorded, "command", "hz.b1.d4").hex()
