"""Waiting for a virtual door and swiping an in-process virtual card at it: what the torture
run, the HIL rig and the virtual-device tests share (the CLI never imports the rig itself)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from card_reader.pn532 import CMD_IN_LIST_PASSIVE_TARGET
from card_reader.presentation import TIMING as CARD_TIMING

AWAY_S = CARD_TIMING["absent_ms"] / 1000 + 0.2  # the door's absent time, and a margin


def wait_for(cond: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def take_away(emu: Any) -> None:
    """Empty the field, then wait until the door has asked the reader again: from then on it
    knows the card left (its last sight of the card is older), so the pause before the next
    presentation counts from a moment the door has passed, however late it runs."""
    emu.remove()
    n = len(emu.commands)  # commands from here on find the field empty
    wait_for(lambda: CMD_IN_LIST_PASSIVE_TARGET in emu.commands[n:], what="the door to look again")


def swipe_local(io: Any, emu: Any, card: Any) -> bool:
    """Present an in-process virtual card (host_tools.cards.vcard) to a virtual door through the
    PN532 emulator until the door decides; True when its relay opened. Waits for the door to
    be idle first (LED off), takes the card away for longer than the door's absent time, and
    after an opening waits for the relay to drop again."""
    from host_tools.pn532_emu import LocalCard

    wait_for(lambda: io.state()["outputs"].get("led") == "off", what="the door idle")
    mark = io.set_input("rex", False)
    emu.present(LocalCard(card.process, card.uid))
    wait_for(lambda: any(e.value in ("green", "red") for e in io.outputs("led") if e.device_ms >= mark),
             what="a decision")
    # The field stays empty until the door has looked again and `absent_ms` more: a card with
    # the same UID shown sooner (a clone, the same card again) would be that same presentation,
    # never decided.
    take_away(emu)
    time.sleep(AWAY_S)
    opened = any(e.value for e in io.outputs("relay") if e.device_ms >= mark)
    if opened:
        wait_for(lambda: io.state()["outputs"].get("relay") is False, what="the relay to drop")
    return opened
