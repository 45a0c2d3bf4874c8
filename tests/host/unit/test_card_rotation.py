"""Site key rotation without reissuing cards: `doorctl card keys rotate` / `close` / `door`, the
desk re-key (host_tools/cards/rekey.py) and the door's re-key at the next swipe, on spec-strict
virtual cards; both versions granted during the window, the old one refused after it; the
card reference never changes; nothing printed carries a key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from card_reader import card_session as cs
from crypto.keystore import SoftwareKeyStore
from host_tools.cards import sitekeys
from host_tools.cards.desfire import DesfireCard, blank_state
from host_tools.cards.personalize import personalize
from host_tools.cards.rekey import rekey
from host_tools.errors import EXIT_USAGE, UserError
from wire import card_profile as profile

DOORCTL = str(Path(sys.executable).with_name("doorctl"))


def _card(n: int) -> DesfireCard:
    return DesfireCard(blank_state(bytes([4, 0x10, n, 3, 4, 5, 6])))


def _door(site: dict) -> SoftwareKeyStore:
    return SoftwareKeyStore.from_dict(json.loads(json.dumps(sitekeys.device_keys(site, "rot.b1.d1"))))


def _site_store(site: dict) -> SoftwareKeyStore:
    return SoftwareKeyStore.from_dict(site)


def _versions(card: DesfireCard) -> list[int]:
    return list(card.state["apps"][profile.DOOR_AID.hex()]["key_versions"])


def _tap(card: DesfireCard):  # type: ignore[no-untyped-def]
    """The card put on a reader afresh (powered up: no session)."""
    card.reset()
    return card.process


def _read(store: SoftwareKeyStore, card: DesfireCard) -> cs.CardResult:
    return cs.CardSession(store).read(_tap(card), card.uid, 0x20)


def test_rotation_end_to_end_on_virtual_cards() -> None:
    site = sitekeys.new_site_keys(77, door_rekey=True)
    cards = [_card(n) for n in range(4)]
    refs = [personalize(c.process, _site_store(site)).ref for c in cards]
    assert all(_versions(c) == [1, 1] for c in cards)
    door_v1 = _door(site)
    assert door_v1.accept == (1,) and "door_read" in repr(door_v1)

    assert sitekeys.rotate(site) == 2
    door = _door(site)
    assert door.accept == (1, 2) and door.key_version == 2 and door.door_rekey
    assert not any(k.startswith("app_master") for k in sitekeys.device_keys(site, "rot.b1.d1")["keys"])

    # desk: card 0 moves both keys; door: card 1 moves its read key at the next swipe
    done = rekey(_tap(cards[0]), _site_store(site))
    assert done.before == (1, 1) and done.after == 2 and done.ref == refs[0]
    assert _versions(cards[0]) == [2, 2]
    r = _read(door, cards[1])
    assert r.ok and r.rekeyed and r.ref == refs[1] and _versions(cards[1]) == [1, 2]
    # during the window every card is read, whatever its version
    for c, ref in zip(cards, refs, strict=True):
        r = _read(door, c)
        assert r.ok and r.ref == ref
    assert sorted(_versions(c)[1] for c in cards) == [2, 2, 2, 2]  # the door moved cards 2 and 3 too

    # a door that does not re-key: card 4 issued now gets version 2 straight away
    late = _card(9)
    assert personalize(late.process, _site_store(site)).ref and _versions(late) == [2, 2]

    # the desk finishes key 0 of a door-re-keyed card
    done = rekey(_tap(cards[1]), _site_store(site))
    assert done.before == (1, 2) and _versions(cards[1]) == [2, 2]

    sitekeys.close(site)
    door = _door(site)
    assert door.accept == (2,) and "door_read" not in sitekeys.device_keys(site, "rot.b1.d1")["keys"]
    assert all(_read(door, c).ok for c in cards)


def test_after_the_window_a_card_the_doors_missed_is_refused_until_the_desk_rekeys_it() -> None:
    site = sitekeys.new_site_keys(78)  # no door re-keying: cards keep ChangeKey right 0
    card = _card(1)
    ref = personalize(card.process, _site_store(site)).ref
    sitekeys.rotate(site)
    assert _read(_door(site), card).ok and _versions(card) == [1, 1]
    sitekeys.close(site)
    r = _read(_door(site), card)
    assert not r.ok and r.reason == "key_retired"
    done = rekey(_tap(card), _site_store(site))  # key 1 by the master key (right 0)
    assert done.after == 2 and done.ref == ref and _versions(card) == [2, 2]
    assert _read(_door(site), card).ok


def test_rotation_states_are_checked() -> None:
    site = sitekeys.new_site_keys(79)
    with pytest.raises(UserError) as e:
        sitekeys.close(site)
    assert e.value.exit_code == EXIT_USAGE and "no rotation is open" in str(e.value)
    sitekeys.rotate(site)
    with pytest.raises(UserError) as e:
        sitekeys.rotate(site)
    assert "already open" in str(e.value)


def test_rekey_of_a_card_from_another_site_says_so() -> None:
    card = _card(2)
    personalize(card.process, _site_store(sitekeys.new_site_keys(80)))
    other = sitekeys.new_site_keys(81)
    sitekeys.rotate(other)
    with pytest.raises(UserError) as e:
        rekey(_tap(card), _site_store(other))
    assert "not a card of this site" in str(e.value)


def _doorctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DOORCTL, "card", *args], capture_output=True, text=True, timeout=120)


def test_the_key_commands_print_no_key(tmp_path: Path) -> None:
    site, door = tmp_path / "site.json", tmp_path / "door.json"
    outs = [_doorctl("keys", "init", "--out", str(site), "--site-id", "12", "--door-rekey")]
    outs.append(_doorctl("keys", "rotate", "--keys", str(site)))
    outs.append(_doorctl("keys", "door", "--keys", str(site), "--device-id", "r.b1.d1", "--out", str(door)))
    assert all(o.returncode == 0 for o in outs), [o.stderr for o in outs]
    assert "key version 2 is current" in outs[1].stdout and "generation 2" in outs[1].stdout
    assert "accepts key version 1 and 2" in outs[2].stdout
    data = json.loads(door.read_text())
    assert data["accept"] == [1, 2] and data["generation"] == 2 and data["door_rekey"] is True
    again = _doorctl("keys", "rotate", "--keys", str(site))
    assert again.returncode == EXIT_USAGE and again.stderr.count("\n") == 1
    assert "Traceback" not in again.stderr
    outs += [again, _doorctl("keys", "close", "--keys", str(site))]
    assert "retired" in outs[-1].stdout
    assert (site.stat().st_mode & 0o777) == 0o600
    secrets = list(json.loads(site.read_text())["keys"].values())
    for o in outs:
        for s in secrets:
            assert s not in o.stdout + o.stderr and s[:16] not in o.stdout + o.stderr
