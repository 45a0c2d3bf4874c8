"""Card present to relay on the virtual device, beside a REX press to relay in the same run.

The card goes through the whole door flow: PN532 frames over the reader link (the host's
emulator), the DESFire EV2 card step in MicroPython, the whitelist lookup, the door's grant.
A REX press takes the same I/O path to the same relay without any card work: the difference
is what the card flow costs.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from firmware.card_task import DEFAULTS as CARD_DEFAULTS
from host_tools.cards.kit import SiteKit
from host_tools.pn532_emu import LocalCard, PN532Emulator
from host_tools.vdev.device import VirtualDevice
from host_tools.vdev.io_client import VirtualIO
from host_tools.vdev.provision import mpremote, provision
from offline_cache import fmt

N = 30
# A card taken away is a new presentation only once the field has been empty this long (the
# unlock time already spent waiting for the relay to drop counts too, but not always enough).
AWAY_S = CARD_DEFAULTS["absent_ms"] / 1000
SMOKE = {"N": 2}
QUICK = {"N": 6}
# The reader polls every 50 ms: a presentation waits 0-50 ms for the next poll; the card step
# is counted in whole milliseconds of the device clock.
NOISE = {"card.decision_ms": (2.0, 25.0), "card.decision_p95_ms": (3.0, 50.0),
         "card.step_ms": (2.0, 5.0), "card.rex_baseline_ms": (2.0, 25.0)}
FIGURES = {
    "card.decision_ms": f"card placed on the reader to relay energised, median of {N}, virtual device "
                        "(includes waiting for the next reader poll, every 50 ms), ms",
    "card.decision_p95_ms": f"same, 95th percentile of {N}, ms",
    "card.step_ms": "card found by the reader to decision taken, device clock, median "
                    "(PN532 frames, EV2 authentication, MAC'd read, lookup), ms",
    "card.rex_baseline_ms": f"baseline: REX pressed to relay energised, median of {N}, same device, ms",
}


QUICK_FIGURES = list(FIGURES)


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
    with tempfile.TemporaryDirectory() as tmp:
        with VirtualDevice(Path(tmp) / "door") as dev:
            provision(dev.pty, config=site.door_config("bench.b1.d1", door={"unlock_ms": 200}),
                      keys=site.door_keys(), cache=site.snapshot(1, [(ref, fmt.ACTIVE, False)]))
            dev.restart()
            mpremote(dev.pty, "exec", "from firmware.main import running\n"
                                      f"running['board'].clock.set_time({time.time()!r})")
            emu = PN532Emulator()
            with emu.connect(dev.reader_addr), VirtualIO(dev.io_addr) as io:
                _wait(lambda: str(io.status().get("reader", "")).startswith("pn532"))
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
                    emu.remove()
                for _ in range(N):
                    _wait(lambda: io.state()["outputs"].get("relay") is False)
                    time.sleep(random.uniform(0.05, 0.35))
                    t0 = time.monotonic()
                    t = io.set_input("rex", True)
                    ev = io.wait_output("relay", True, timeout_s=10, after_ms=t)
                    rex_ms.append((ev.host_s - t0) * 1000)
                    io.set_input("rex", False)
    card_ms.sort()
    return {
        "card.decision_ms": statistics.median(card_ms),
        "card.decision_p95_ms": card_ms[int(0.95 * (len(card_ms) - 1))],
        "card.step_ms": statistics.median(step_ms),
        "card.rex_baseline_ms": statistics.median(rex_ms),
    }
