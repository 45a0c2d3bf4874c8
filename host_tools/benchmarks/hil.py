"""The HIL rig's timing table on the virtual rig: cards on vpcd behind pcscd, relayed by the PN532
emulator to the virtual door, with mosquitto and the platform. Baseline in the same run: a REX
press to the relay (the same door and I/O path, no card)."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from firmware import events as ev
from host_tools.cards import pcsc
from host_tools.console import call

N = 10
BACKLOG = 2000
SMOKE = {"N": 1, "BACKLOG": 20}
FIGURES = {
    "hil.card_to_relay_ms": f"card placed on a PC/SC reader (vpcd) to the door's relay, median of {N}, ms",
    "hil.card_to_relay_p95_ms": f"same, 95th percentile of {N}, ms",
    "hil.card_to_refusal_ms": f"a clone placed to the door's refusal (red LED), median of {N}, ms",
    "hil.forced_open_to_platform_ms": "door forced open to the alarm stored at the platform, ms",
    "hil.held_open_after_limit_ms": "held-open alarm stored at the platform, after the configured "
                                    "limit, ms",
    "hil.drain_events_per_s": f"a {BACKLOG}-event offline backlog drained to the platform after "
                              "the broker returns, events/s",
    "hil.rex_baseline_ms": f"baseline: REX pressed to the relay, median of {N}, ms",
}


def run(names: set[str]) -> dict[str, float]:
    # The rig itself runs here (imported on use: the CLI does not load the test rig).
    from hil.rig import Timings, wait_for
    from hil.virtual import DEVICE, DOOR_TIMINGS, VirtualDoor

    proc = pcsc.start_pcscd()
    try:
        if not pcsc.wait_for_reader("Virtual PCD 00 00"):
            raise RuntimeError("pcscd with vsmartcard-vpcd shows no Virtual PCD reader")
        timings = Timings()
        with tempfile.TemporaryDirectory() as tmp:
            door = VirtualDoor(Path(tmp), timings)
            try:
                io = door.io
                assert io is not None
                for _ in range(N):
                    if not door.swipe("resident"):
                        raise RuntimeError("the resident's card was refused")
                    door.swipe("clone")
                rex = []
                for _ in range(N):
                    wait_for(lambda: io.state()["outputs"].get("relay") is False)
                    t0 = time.monotonic()
                    mark = io.set_input("rex", True)
                    rex.append(io.wait_output("relay", True, 5, mark).host_s - t0)
                    io.set_input("rex", False)
                wait_for(lambda: io.state()["outputs"].get("relay") is False)
                t0 = time.monotonic()
                io.set_input("door_contact", "open")
                forced = door.wait_event(ev.FORCED_OPEN)
                door.wait_event(ev.HELD_OPEN)
                held = time.monotonic() - t0 - DOOR_TIMINGS["held_open_ms"] / 1000
                io.set_input("door_contact", "closed")
                before = len(door.events())
                door.network(False)
                call(door.dev.pty, "record_events", BACKLOG, 2, 1)
                t0 = time.monotonic()
                door.network(True)
                wait_for(lambda: len(door.events()) >= before + BACKLOG, 120, "the backlog")
                drain = time.monotonic() - t0
                if door.platform.store.missing(DEVICE):
                    raise RuntimeError("events missing at the platform")
            finally:
                door.close()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
    relay = sorted(timings.samples["card_to_relay"])
    return {
        "hil.card_to_relay_ms": statistics.median(relay) * 1000,
        "hil.card_to_relay_p95_ms": relay[int(0.95 * (len(relay) - 1))] * 1000,
        "hil.card_to_refusal_ms": statistics.median(timings.samples["card_to_refusal"]) * 1000,
        "hil.forced_open_to_platform_ms": forced * 1000,
        "hil.held_open_after_limit_ms": held * 1000,
        "hil.drain_events_per_s": BACKLOG / drain,
        "hil.rex_baseline_ms": statistics.median(rex) * 1000,
    }
