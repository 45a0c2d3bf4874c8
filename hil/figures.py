"""The virtual rig's figures for `doorctl bench hil` (host_tools/benchmarks/hil.py), measured
in a process of their own: `python -m hil.figures N BACKLOG` prints them as one JSON object.
The CLI runs the rig this way and never imports it.

Cards on vpcd behind pcscd, relayed by the PN532 emulator to the virtual door, with mosquitto
and the platform. Baseline in the same run: a REX press to the relay (the same door and I/O
path, no card)."""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from hil.rig import Timings, wait_for
from hil.virtual import DEVICE, DOOR_TIMINGS, VirtualDoor
from host_tools.cards import pcsc
from host_tools.console import call
from wire import codes as ev


def measure(n: int, backlog: int) -> dict[str, float]:
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
                for _ in range(n):
                    if not door.swipe("resident"):
                        raise RuntimeError("the resident's card was refused")
                    door.swipe("clone")
                rex = []
                for _ in range(n):
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
                call(door.dev.pty, "record_events", backlog, 2, 1)
                t0 = time.monotonic()
                door.network(True)
                wait_for(lambda: len(door.events()) >= before + backlog, 120, "the backlog")
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
        "hil.drain_events_per_s": backlog / drain,
        "hil.rex_baseline_ms": statistics.median(rex) * 1000,
    }


def main(argv: list[str]) -> int:
    n, backlog = (int(a) for a in argv)
    print(json.dumps(measure(n, backlog)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
