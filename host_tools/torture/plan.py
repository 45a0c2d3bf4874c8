"""The schedule of a torture run: a pure function of the seed, so a seed reproduces a run's
faults in the same order with the same parameters (their timing on a loaded machine varies)."""

from __future__ import annotations

import random
from dataclasses import dataclass

# What happens how often: weights of the actions drawn one after another. Power cuts weigh
# most and hostile bursts are large: the size (1,000 cuts beside 100 broker faults and
# 10,000 hostile messages) is then reached together, in about 1,850 actions (two to three hours
# on two shared cores), instead of the cuts lagging far behind the rest.
WEIGHTS: dict[str, int] = {
    "swipe": 5,          # a valid card at the virtual door; it must open unless a fault is recent
    "rex": 3,            # the exit button: events to deliver
    "cut": 14,           # kill -9 of the virtual door (sometimes torn at a journal write), boot again
    "ring_cut": 14,      # kill -9 of the small-ring door (sometimes torn at a flash write)
    "broker_stop": 2,    # SIGSTOP of mosquitto, SIGCONT after a while
    "broker_kill": 2,    # kill -9 of mosquitto, started again on the same port
    "tcp_drop": 2,       # the proxy closes every door connection
    "tcp_cut_publish": 2,  # the proxy forwards half of the door's next event batch, then closes
    "connack_cut": 1,    # the next connections are closed right after their CONNACK
    "platform_kill": 2,  # kill -9 of `doorctl platform run`, started again after a while
    "outage": 0,         # the platform away long enough for the small ring to overflow (placed)
    "hostile": 4,        # a burst of hostile messages on the doors' topics
}


OUTAGE_EVERY = 40  # actions: one of them is always a long outage


@dataclass(frozen=True)
class Action:
    kind: str
    pause_s: float  # how long the fault lasts (stop, outage) or the wait after it
    arg: int  # kind-specific: flash ops before a torn write, burst size, connections cut

    def __str__(self) -> str:
        return f"{self.kind}(pause={self.pause_s:.1f}s, arg={self.arg})"


def make_plan(seed: int, n: int, outage_s: float = 15.0) -> list[Action]:
    """`n` actions drawn from WEIGHTS with their parameters, from `seed` alone."""
    rng = random.Random(seed)
    kinds = list(WEIGHTS)
    weights = [WEIGHTS[k] for k in kinds]
    plan: list[Action] = []
    for i in range(n):
        kind = rng.choices(kinds, weights)[0]
        if i % OUTAGE_EVERY == OUTAGE_EVERY // 4:
            kind = "outage"  # at least one long outage in every run of some length
        pause = round(rng.uniform(0.2, 3.0), 1)
        arg = 0
        if kind == "cut":
            arg = rng.choice((0, 0, rng.randint(1, 8)))  # 0: kill -9; n: torn at its n-th write
        elif kind == "ring_cut":
            arg = rng.choice((0, 0, rng.randint(1, 40)))  # 0: kill -9; n: torn at the n-th write
        elif kind == "hostile":
            arg = rng.randint(40, 110)
        elif kind == "connack_cut":
            arg = rng.randint(1, 4)
        elif kind == "outage":
            pause = outage_s * rng.uniform(1.0, 1.5)
        elif kind in ("broker_stop", "platform_kill"):
            pause = round(rng.uniform(0.5, 8.0), 1)
        plan.append(Action(kind, pause, arg))
    return plan
