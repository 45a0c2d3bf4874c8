"""Card present to relay on the virtual device, beside a REX press to relay in the same run.

The card goes through the whole door flow: PN532 frames over the reader link (the host's
emulator), the DESFire EV2 card step in MicroPython, the whitelist lookup, the door's grant.
A REX press takes the same I/O path to the same relay without any card work: the difference
is what the card flow costs.

The field figures run the same flow with the emulator in field mode (host_tools.field_timing:
the PN532's HSU at 115,200 baud, the ISO 14443 air at 106 kbit/s and a DESFire EV2's command
latencies), so they predict a door in the field; the per-step figures say where that time goes.
"""

from __future__ import annotations

import functools
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from card_reader import pn532 as p
from card_reader.presentation import TIMING as CARD_TIMING
from host_tools.cards.kit import SiteKit
from host_tools.console import call
from host_tools.field_timing import FieldTiming
from host_tools.pn532_emu import FrameTime, LocalCard, PN532Emulator
from host_tools.vdev.device import VirtualDevice
from host_tools.vdev.io_client import VirtualIO
from host_tools.vdev.provision import provision
from host_tools.vdev.swipe import take_away
from offline_cache import fmt

N = 30
N_FIELD = 200  # presentations with field timing
# A card taken away is a new presentation only once the field has been empty this long (the
# unlock time already spent waiting for the relay to drop counts too, but not always enough).
AWAY_S = CARD_TIMING["absent_ms"] / 1000
SMOKE = {"N": 2, "N_FIELD": 2}
QUICK = {"N": 6, "N_FIELD": 20}
# The PN532 waits for the card itself (card_task's wait_ms): a presentation waits for the
# chip's next activation try, or, in the short gap between two waits, for the next one; the
# card step is counted in whole milliseconds of the device clock.
NOISE = {"card.decision_ms": (2.0, 25.0), "card.decision_p95_ms": (3.0, 50.0),
         "card.step_ms": (2.0, 5.0), "card.rex_baseline_ms": (2.0, 25.0),
         "card.decision_field_p50_ms": (2.0, 25.0)}
STEPS = {
    "poll": "card placed to the reader's InListPassiveTarget that finds it (the PN532 waiting "
            "for a card: its next activation try)",
    "select": "that InListPassiveTarget (activation, RATS) to SelectApplication and "
              "GetKeyVersion answered",
    "auth": "AuthenticateEV2First, both parts, with the door's key derivation and crypto",
    "read": "GetCardUID and ReadData on the link and in the card",
    "mac": "the door's secure messaging between them (CMACs, MAC checks, decrypting the UID)",
    "lookup": "the whitelist lookup (device clock, µs resolution)",
    "relay": "ReadData answered to relay energised, less the lookup (its MAC check, the "
             "credential, the card reference, the grant, the I/O channel; InRelease follows)",
}
NOISE.update({f"card.field_step_{k}_ms": (2.0, 5.0) for k in STEPS})
FIGURES = {
    "card.decision_ms": f"card placed on the reader to relay energised, median of {N}, virtual device "
                        "(the PN532 waiting for the card, as the door runs it), ms",
    "card.decision_p95_ms": f"same, 95th percentile of {N}, ms",
    "card.step_ms": "card found by the reader to decision taken, device clock, median "
                    "(PN532 frames, EV2 authentication, MAC'd read, lookup), ms",
    "card.rex_baseline_ms": f"baseline: REX pressed to relay energised, median of {N}, same device, ms",
    "card.decision_field_p50_ms": f"card placed to relay energised with field timing (PN532 HSU at "
                                  f"115,200 baud, DESFire EV2 RF and card latencies), median of "
                                  f"{N_FIELD}, virtual device, ms",
    "card.decision_field_p95_ms": f"same, 95th percentile of {N_FIELD} (goal <= 150), ms",
}
FIGURES.update({f"card.field_step_{k}_ms": f"field timing, median per presentation: {v}, ms"
                for k, v in STEPS.items()})
FIELD_FIGURES = {"card.decision_field_p50_ms", "card.decision_field_p95_ms"} | {
    f"card.field_step_{k}_ms" for k in STEPS}
FAST_FIGURES = set(FIGURES) - FIELD_FIGURES


QUICK_FIGURES = list(FIGURES)


def field_steps(trace: list[FrameTime], placed_s: float, relay_s: float,
                lookup_s: float) -> dict[str, float]:
    """Split one presentation (card placed at `placed_s`, relay at `relay_s`) into STEPS, in
    seconds, from the emulator's frame trace."""
    ex = [f for f in trace if f.cmd == p.CMD_IN_DATA_EXCHANGE and f.arrived >= placed_s]
    first = ex[0]
    # The InListPassiveTarget that found the card: a polled one, or the activation try of a
    # held one (the emulator records that try when the chip waits for the card itself).
    found = [f for f in trace if f.cmd == p.CMD_IN_LIST_PASSIVE_TARGET
             and f.arrived <= first.arrived][-1]
    by_ins = {f.ins: f for f in ex}
    key_version, auth2, uid, read = by_ins[0x64], by_ins[0xAF], by_ins[0x51], by_ins[0xAD]
    on_link = (uid.answered - uid.arrived) + (read.answered - read.arrived)
    return {
        "poll": max(0.0, found.arrived - placed_s),
        "select": key_version.answered - found.arrived,
        "auth": auth2.answered - key_version.answered,
        "read": on_link,
        "mac": read.answered - auth2.answered - on_link,
        "lookup": lookup_s,
        "relay": max(0.0, relay_s - read.answered - lookup_s),
    }


def _field(emu: PN532Emulator, io: VirtualIO, card_uid: bytes, process: Callable[[bytes], bytes]
           ) -> dict[str, float]:
    emu.field_timing = FieldTiming()
    total: list[float] = []
    steps: dict[str, list[float]] = {k: [] for k in STEPS}
    for _ in range(N_FIELD):
        _wait(lambda: io.state()["outputs"].get("relay") is False)
        time.sleep(AWAY_S + random.uniform(0.05, 0.35))
        t = io.set_input("rex", False)
        emu.trace.clear()
        t0 = time.monotonic()
        emu.present(LocalCard(process, card_uid))
        ev = io.wait_output("relay", True, timeout_s=10, after_ms=t)
        total.append((ev.host_s - t0) * 1000)
        _wait(functools.partial(_released_since, emu, t0))
        lookup_s = float(io.status().get("lookup_us", 0)) / 1e6
        for k, v in field_steps(list(emu.trace), t0, ev.host_s, lookup_s).items():
            steps[k].append(v * 1000)
        take_away(emu)
    emu.field_timing = None
    total.sort()
    out = {"card.decision_field_p50_ms": statistics.median(total),
           "card.decision_field_p95_ms": total[int(0.95 * (len(total) - 1))]}
    out.update({f"card.field_step_{k}_ms": statistics.median(v) for k, v in steps.items()})
    budget = sorted(((statistics.median(v), k) for k, v in steps.items()), reverse=True)
    print(f"card with field timing, median of {N_FIELD}: where the time goes", file=sys.stderr)
    for ms, k in budget:
        print(f"  {k:<7} {ms:8.1f} ms  {STEPS[k]}", file=sys.stderr)
    return out


def _released_since(emu: PN532Emulator, t0: float) -> bool:
    """Whether the door has sent InRelease since `t0` (the presentation's card step is over)."""
    return any(f.cmd == p.CMD_IN_RELEASE and f.arrived > t0 for f in list(emu.trace))


def _wait(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("virtual device did not react")
        time.sleep(0.005)


def run(names: set[str]) -> dict[str, float]:
    site = SiteKit()
    card, ref = site.issue()
    card_ms: list[float] = []
    step_ms: list[float] = []
    rex_ms: list[float] = []
    field: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        with VirtualDevice(Path(tmp) / "door") as dev:
            provision(dev.pty, config=site.door_config("bench.b1.d1", door={"unlock_ms": 200}),
                      keys=site.door_keys(), cache=site.snapshot(1, [(ref, fmt.ACTIVE, False)]))
            dev.restart()
            call(dev.pty, "set_time", time.time())
            emu = PN532Emulator()
            with emu.connect(dev.reader_addr), VirtualIO(dev.io_addr) as io:
                _wait(lambda: str(io.status().get("reader", "")).startswith("pn532"))
                if names & FIELD_FIGURES:
                    field = _field(emu, io, card.uid, card.process)
                if not names & FAST_FIGURES:
                    return field
                for _ in range(N):
                    _wait(lambda: io.state()["outputs"].get("relay") is False)
                    # the field empty long enough to end the last presentation, then a random
                    # moment in the reader's poll cycle, as a hand would
                    time.sleep(AWAY_S + random.uniform(0.05, 0.35))
                    t = io.set_input("rex", False)
                    t0 = time.monotonic()
                    emu.present(LocalCard(card.process, card.uid))
                    ev = io.wait_output("relay", True, timeout_s=10, after_ms=t)
                    card_ms.append((ev.host_s - t0) * 1000)
                    step_ms.append(float(io.status()["card_ms"]))
                    take_away(emu)
                for _ in range(N):
                    _wait(lambda: io.state()["outputs"].get("relay") is False)
                    time.sleep(random.uniform(0.05, 0.35))
                    t0 = time.monotonic()
                    t = io.set_input("rex", True)
                    ev = io.wait_output("relay", True, timeout_s=10, after_ms=t)
                    rex_ms.append((ev.host_s - t0) * 1000)
                    io.set_input("rex", False)
    card_ms.sort()
    return field | {
        "card.decision_ms": statistics.median(card_ms),
        "card.decision_p95_ms": card_ms[int(0.95 * (len(card_ms) - 1))],
        "card.step_ms": statistics.median(step_ms),
        "card.rex_baseline_ms": statistics.median(rex_ms),
    }
