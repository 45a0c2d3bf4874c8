"""A city on one machine: simulated doors (host_tools/doorsim.py, protocol v1 on the wire, in a
process of their own) against mosquitto, the platform and PostgreSQL.

The source documents' city has about 16,900 doors. Goals on one machine: every door connected
at once, at least 10,000 events per second stored and acknowledged, a lost card held by every
door within 2 s (95th percentile). Where a figure falls short, the run shows what limits it:
the simulator's process, the broker and the platform (with its database) each run in their own
process, and the CPU seconds of each (`scale.platform_cpu_s`, `scale.sim_cpu_s`,
`scale.broker_cpu_s`, `scale.db_cpu_s` for the drain; `scale.lost_card_*_cpu_s` for the
fan-out) say which one was busy: on a 2-core machine a figure that misses its goal while the
processes' CPU seconds add up to about twice its wall time is limited by the machine. The
city is a per-door site (as `doorctl card keys init` makes one): the platform signs the delta
for each door with that door's cache key, and each simulated door checks the pieces' and the
file's tags with its own before it counts as holding the new whitelist. The
lost card is measured in steady state (the platform's messages caused by the doors'
announce have reached the broker first). Baseline in the same run: the same drain into SQLite
by one platform instance.

The lost card's bulk fan-out is also timed per stage (`scale.lost_card_encoded_s`, `_sent_s`,
`_last_door_s`, `_answered_s`: revocation to every message encoded, to the broker's last
acknowledgement, to the last door holding the file, to the platform holding every answer),
which shows where its time goes. Its rounds' spread (`scale.lost_card_p95_min_s`, `_max_s`,
`_rounds_met`) and what limits it (`scale.lost_card_cpu_floor_s`: the last door can come no
sooner than the fan-out's own CPU allows, mosquitto being one thread and each simulator
process one; `scale.lost_card_others_cpu_s`: the CPU the rest of the machine took meanwhile)
are reported beside the p95, so a round that misses the goal says whether the code or the
machine's load held it back. `scale.tls_*`: the same lost card to TLS_DOORS doors with
the platform on TLS beside a platform on plain TCP, in turns on one broker, so that the
answers' cost over TLS (they come at QoS 0) is measured rather than guessed; `scale.tls_answers_cpu_s`
is the platform's CPU for DOORS answers over TLS, beside plain TCP, with no doors running. SIM_PROCS splits
the doors over several simulator processes.
"""

from __future__ import annotations

import json
import os
import queue
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from host_tools.cards import sitekeys
from host_tools.cards.kit import SiteKit
from host_tools.services.mosquitto import Mosquitto
from reference_platform.cards import CardRegistry
from reference_platform.distribute import attach, sync
from reference_platform.ingest import Platform
from reference_platform.store import Store

DOORS = 16_900
LOST_CARD_ROUNDS = 4  # lost cards measured each way (baseline, bulk), in turns
SIM_PROCS = 1  # simulator processes the city's doors are split over
TLS_DOORS = 2_000  # doors of the lost card with the platform on TLS beside it on plain TCP
ANSWER_ROUNDS = 3  # answer bursts to each platform (TLS, plain), in turns
DRAIN_DOORS = 500
DRAIN_EVENTS = 200  # per door: 100,000 events in all
SMOKE = {"DOORS": 120, "DRAIN_DOORS": 10, "DRAIN_EVENTS": 20, "TLS_DOORS": 20,
         "SIM_PROCS": 2}  # 120: the bulk fan-out runs; two simulator processes: the split runs
FIGURES = {
    "scale.doors_online": "simulated doors connected to mosquitto at once (goal: 16,900), doors",
    "scale.connect_s": "from the simulator's start to every door connected and announced, s",
    "scale.presence_s": "from every door connected to the platform holding every door online, s",
    "scale.lost_card_p50_s": "a card reported lost: registry revocation to a door holding the new "
                             "whitelist (signed for it, checked with its own key), median over "
                             "every online door, s",
    "scale.lost_card_p95_s": "same, 95th percentile (goal: 2 s), s",
    "scale.lost_card_platform_cpu_s": "CPU seconds the platform process used for the lost card's "
                                      "fan-out (publishing, taking the doors' answers)",
    "scale.lost_card_sim_cpu_s": "CPU seconds the simulated doors' process used for the fan-out",
    "scale.lost_card_broker_cpu_s": "CPU seconds mosquitto used for the fan-out",
    "scale.lost_card_p95_min_s": "the lost card's p95 in its best round (LOST_CARD_ROUNDS bulk "
                                 "rounds, each over every online door), s",
    "scale.lost_card_p95_max_s": "same, in its worst round, s",
    "scale.lost_card_rounds_met": "bulk rounds whose p95 met the goal (2 s), of LOST_CARD_ROUNDS",
    "scale.lost_card_cpu_floor_s": "what the fan-out's own CPU allows at best on this machine: "
                                   "the largest of mosquitto's CPU seconds (one thread), the platform's, one "
                                   "simulator process's, and the three processes' together over "
                                   "the cores; a last door sooner than this cannot be had here "
                                   "(median over the bulk rounds), s",
    "scale.lost_card_others_cpu_s": "CPU seconds every other process on the machine (PostgreSQL "
                                    "and whatever else runs) used during the fan-out: the cores "
                                    "the fan-out did not get (median over the bulk rounds)",
    "scale.baseline_lost_card_p50_s": "baseline: the same lost card with every message through "
                                      "the platform's paho connection, in turns with the "
                                      "bulk fan-out in the same run, median, s",
    "scale.baseline_lost_card_p95_s": "baseline: same, 95th percentile, s",
    "scale.baseline_lost_card_platform_cpu_s": "baseline: CPU seconds of the platform process "
                                               "per lost card",
    "scale.baseline_lost_card_sim_cpu_s": "baseline: CPU seconds of the simulated doors' process "
                                          "per lost card",
    "scale.baseline_lost_card_broker_cpu_s": "baseline: CPU seconds of mosquitto per lost card",
    "scale.lost_card_encoded_s": "of the lost card (bulk fan-out, median over its rounds): "
                                 "revocation to every door's message encoded, s",
    "scale.lost_card_sent_s": "of which: to the broker acknowledging the fan-out's last message "
                              "(the bulk connection waits for every PUBACK), s",
    "scale.lost_card_last_door_s": "of which: to the last door holding the new whitelist, s",
    "scale.lost_card_answered_s": "of which: to the platform holding every door's answer, s",
    "scale.tls_lost_card_p50_s": "a lost card to TLS_DOORS simulated doors with the platform on "
                                 "TLS (its fan-out through paho, the answers at QoS 0 over TLS), "
                                 "median, s",
    "scale.tls_lost_card_p95_s": "same, 95th percentile, s",
    "scale.tls_lost_card_answers_s": "same: the last door holding it to the platform holding "
                                     "every answer, median over the rounds, s",
    "scale.tls_lost_card_platform_cpu_s": "same: CPU seconds of the platforms' process per lost "
                                          "card (both platforms run in it, each takes every "
                                          "answer)",
    "scale.tls_baseline_lost_card_p50_s": "baseline: the same lost card, doors and broker, the "
                                          "platform on plain TCP (also through paho), in turns "
                                          "with the TLS one in the same run, median, s",
    "scale.tls_baseline_lost_card_p95_s": "baseline: same, 95th percentile, s",
    "scale.tls_baseline_lost_card_answers_s": "baseline: the last door holding it to the "
                                              "platform holding every answer, s",
    "scale.tls_baseline_lost_card_platform_cpu_s": "baseline: CPU seconds of the platforms' "
                                                   "process per lost card",
    "scale.tls_answers_cpu_s": "CPU seconds the platform (ingest=False, on TLS) spends taking "
                               "one whitelist answer from each of DOORS doors at QoS 0, no doors "
                               "running (the answers published in bulk on the plain listener), "
                               "median of ANSWER_ROUNDS",
    "scale.tls_baseline_answers_cpu_s": "baseline: the same answers to the platform on plain TCP, "
                                        "in turns in the same run, CPU s",
    "scale.events_per_s": "events stored in PostgreSQL and acknowledged, two platform instances, "
                          "doors draining their backlogs together, per s (goal: 10,000)",
    "scale.baseline_events_per_s": "baseline: the same drain into SQLite, one platform instance, per s",
    "scale.platform_cpu_s": "CPU seconds the platform process used during the PostgreSQL drain",
    "scale.sim_cpu_s": "CPU seconds the simulated doors' process used during the PostgreSQL drain",
    "scale.broker_cpu_s": "CPU seconds mosquitto used during the PostgreSQL drain",
    "scale.db_cpu_s": "CPU seconds PostgreSQL (every server process) used during the drain",
}


# The figures of the city's run (_online_and_lost_card); the others have runs of their own.
CITY_FIGURES = {n for n in FIGURES if n.startswith(("scale.lost_card_", "scale.baseline_lost_card_"))} | {
    "scale.doors_online", "scale.connect_s", "scale.presence_s"}


class Sim:
    """The simulated doors' process, driven over its stdin/stdout (doorsim.main)."""

    def __init__(self, brokers: list[str], doors: int, prefix: str, events: int = 0,
                 whitelist: int = 0, keys: Path | None = None, first: int = 0) -> None:
        args = [sys.executable, "-m", "host_tools.doorsim", "--doors", str(doors), "--prefix", prefix,
                "--events", str(events), "--whitelist", str(whitelist), "--first", str(first)]
        if keys is not None:
            args += ["--keys", str(keys)]
        for b in brokers:
            args += ["--broker", b]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        # Its lines are read on a thread of their own, so that a wait can end at its timeout
        # while the process says nothing (a blocking readline would wait for ever).
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, name="doorsim-out", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put("")  # the end of its output

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, event: str, timeout: float = 600.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"the door simulator did not report {event!r} in "
                                   f"{timeout:.0f} s") from None
            if not line:
                self._lines.put("")  # for any later wait too
                raise RuntimeError(f"the door simulator ended before {event!r}")
            msg = json.loads(line)
            if msg.get("event") == event:
                return dict(msg)

    def cpu_s(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class SimGroup:
    """The doors split over `procs` simulator processes (door numbers in order: process k runs
    a contiguous slice), driven as one: a milestone is reported when every process reported
    it, merged (doors and events summed, the latest time; `recorded` at the earliest)."""

    def __init__(self, brokers: list[str], doors: int, prefix: str, procs: int = 1,
                 **kw: Any) -> None:
        procs = max(1, min(procs, doors))
        cuts = [doors * k // procs for k in range(procs + 1)]
        self.sims: list[Sim] = []
        try:
            for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
                self.sims.append(Sim(brokers, hi - lo, prefix, first=lo, **kw))
        except BaseException:
            self.close()
            raise

    @property
    def pids(self) -> list[int]:
        return [s.proc.pid for s in self.sims]

    def send(self, line: str) -> None:
        for s in self.sims:
            s.send(line)

    def expect(self, event: str, timeout: float = 600.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        got = [s.expect(event, max(1.0, deadline - time.monotonic())) for s in self.sims]
        merged = dict(got[0])
        for key in ("doors", "events", "refused"):
            if key in merged:
                merged[key] = sum(g[key] for g in got)
        for key in ("t", "since_start"):
            if key in merged:
                merged[key] = (min if event == "recorded" else max)(g[key] for g in got)
        if "at" in merged:
            merged["at"] = [t for g in got for t in g["at"]]
        return merged

    def close(self) -> None:
        for s in self.sims:
            s.close()


def tree_cpu_s(pid: int | list[int]) -> float:
    """CPU seconds used by a process and its descendants, living and reaped (PostgreSQL's
    backends, a server started through runuser)."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        stats[int(entry)] = fields
        children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0, list(pid) if isinstance(pid, list) else [pid]
    while todo:
        p = todo.pop()
        if p in stats:
            total += sum(int(x) for x in stats[p][11:15])  # utime stime cutime cstime
        todo += children.get(p, [])
    return total / os.sysconf("SC_CLK_TCK")


def machine_cpu_s() -> float:
    """CPU seconds every process on the machine has used (all cores, /proc/stat: user, nice,
    system, irq, softirq; not a virtual machine's steal, which no process here used), to tell
    the fan-out's own CPU from the rest of the load."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out: {what}")
        time.sleep(0.05)


def _p(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def _online_and_lost_card(out: dict[str, float], broker: Mosquitto, db_url: str, tmp: Path) -> None:
    site = SiteKit(per_door=True)  # as `doorctl card keys init` makes a site: each door its own keys
    keys = tmp / "site-keys.json"
    sitekeys.write_secret(keys, site.keys)
    store = Store(db_url)
    reg = CardRegistry(store, site.keys)
    today = time.gmtime()
    from datetime import date, timedelta

    day = date(today.tm_year, today.tm_mon, today.tm_mday)
    cards = [f"{i:02x}" * 8 for i in range(1, 2 * LOST_CARD_ROUNDS + 1)]
    for ref in cards:
        reg.issue(ref, "r-1", "101", [0], day - timedelta(days=30), day + timedelta(days=365))
    version = reg.version()
    sim = SimGroup([f"{broker.host}:{broker.port}"], DOORS, "city.d", SIM_PROCS,
                   whitelist=version, keys=keys)
    listener_store: Store | None = None
    try:
        online = sim.expect("online", timeout=900)
        out["scale.doors_online"] = float(online["doors"])
        out["scale.connect_s"] = float(online["since_start"])
        # As `doorctl platform run --keys` makes it: the site's keys, and a card registry of
        # its own (its own connection) that brings a door reporting an older whitelist up to date.
        platform = Platform(store, broker.host, broker.port, ingest=False, site_keys=site.keys)
        listener_store = Store(db_url)
        attach(platform, CardRegistry(listener_store, site.keys))
        with platform:
            t0 = time.monotonic()
            _wait(lambda: len(platform.cache_states) >= DOORS, 600, "every door's whitelist state")
            out["scale.presence_s"] = time.monotonic() - t0
            devices = sorted(platform.cache_states)
            # Measured in steady state: what the doors' announce set off (a time message per
            # door, their presence stored) is done before the card is reported lost.
            if not platform.flush(600):
                raise TimeoutError("the platform's messages did not reach the broker")
            pids: dict[str, int | list[int] | None] = {"sim": sim.pids, "broker": broker.pid}
            got: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
            # The baseline (every message through paho's connection) and the bulk fan-out in
            # turns, so that both see the same machine.
            for i, ref in enumerate(cards):
                bulk = i % 2 == 1
                platform.fanout_bulk = bulk
                before = platform.bulk_published
                got[bulk].append(_lost_card(platform, reg, sim, devices, ref, pids))
                if (platform.bulk_published > before) != bulk:
                    raise RuntimeError("the fan-out did not take the path it was measured for")
            for bulk, prefix in ((True, "scale.lost_card_"), (False, "scale.baseline_lost_card_")):
                lat = [x for r in got[bulk] for x in r["lat"]]
                out[prefix + "p50_s"] = _p(lat, 0.5)
                out[prefix + "p95_s"] = _p(lat, 0.95)
                for part in ("platform", "sim", "broker"):
                    out[f"{prefix}{part}_cpu_s"] = sum(r[part] for r in got[bulk]) / len(got[bulk])
            rounds_p95 = [_p(r["lat"], 0.95) for r in got[True]]
            out["scale.lost_card_p95_min_s"] = min(rounds_p95)
            out["scale.lost_card_p95_max_s"] = max(rounds_p95)
            out["scale.lost_card_rounds_met"] = float(sum(p <= 2.0 for p in rounds_p95))
            for key in ("cpu_floor", "others_cpu"):
                out[f"scale.lost_card_{key}_s"] = statistics.median(r[key] for r in got[True])
            for stage in ("encoded", "sent", "last_door", "answered"):
                out[f"scale.lost_card_{stage}_s"] = statistics.median(
                    r["stages"][stage] for r in got[True])
    finally:
        sim.close()
        store.close()
        if listener_store is not None:
            listener_store.close()


def _lost_card(platform: Platform, reg: CardRegistry, sim: SimGroup, devices: list[str], ref: str,
               pids: dict[str, int | list[int] | None]) -> dict[str, Any]:
    """One card reported lost and synced to every door: each door's latency (the simulated door
    holding the new version, checked with its own key) and each process's CPU seconds."""
    cpu0 = {k: tree_cpu_s(p) for k, p in pids.items() if p is not None}
    sims0 = [tree_cpu_s(p) for p in sim.pids]
    machine0 = machine_cpu_s()
    own0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.monotonic()
    reg.report_lost(ref)
    result = sync(platform, reg, devices, timeout=60)
    answered = time.monotonic()
    stages = dict(platform.fanout_stages)
    own1 = resource.getrusage(resource.RUSAGE_SELF)
    machine = machine_cpu_s() - machine0
    used = {k: tree_cpu_s(pids[k]) - v for k, v in cpu0.items()}  # type: ignore[arg-type]
    sims = [tree_cpu_s(p) - c for p, c in zip(sim.pids, sims0, strict=True)]
    failed = [d for d, r in result.items() if not r.startswith("updated")]
    if failed:
        raise RuntimeError(f"{len(failed)} doors did not take the lost card: {result[failed[0]]}")
    sim.send(f"updates {reg.version()}")
    updates = sim.expect("updates")
    if updates["refused"]:
        raise RuntimeError(f"{updates['refused']} whitelist pieces failed a door's check")
    lat = [t - start for t in updates["at"] if t is not None]
    if len(lat) != len(devices):
        raise RuntimeError(f"{len(devices) - len(lat)} doors report no new whitelist")
    platform_cpu = own1.ru_utime + own1.ru_stime - own0.ru_utime - own0.ru_stime
    ours = platform_cpu + used["sim"] + used["broker"]
    return {"lat": lat, "platform": platform_cpu, "sim": used["sim"], "broker": used["broker"],
            "others_cpu": max(0.0, machine - ours),
            "cpu_floor": max(used["broker"], platform_cpu, max(sims), ours / (os.cpu_count() or 1)),
            "stages": {"encoded": stages.get("publish", answered) - start,
                       "sent": stages.get("published", answered) - start,
                       "first_door": min(lat), "last_door": max(lat),
                       "answered": answered - start}}


def _tls_lost_card(out: dict[str, float], db_url: str, tmp: Path) -> None:
    """The same lost card to TLS_DOORS doors from a platform on TLS and from one on plain TCP,
    in turns (both through paho: a platform on TLS has no bulk connection), on one broker
    with a TLS listener and a plain one (the doors on the plain one). Both platforms are
    connected throughout, so each round's broker carries the same load."""
    from host_tools.services.mosquitto import TLSListener, free_port
    from host_tools.services.tlsgen import CA

    ca = CA(tmp / "pki")
    server = ca.server()
    site = SiteKit(per_door=True)
    keys = tmp / "tls-site-keys.json"
    sitekeys.write_secret(keys, site.keys)
    store = Store(db_url)
    reg = CardRegistry(store, site.keys)
    from datetime import date, timedelta

    today = date.today()
    cards = [f"{i:02x}" * 8 for i in range(1, 2 * LOST_CARD_ROUNDS + 1)]
    for ref in cards:
        reg.issue(ref, "r-1", "101", [0], today - timedelta(days=30), today + timedelta(days=365))
    plain_port = free_port()
    with Mosquitto(tls=TLSListener(ca.cert, server.cert, server.key),
                   plain_port=plain_port) as broker:
        sim = SimGroup([f"{broker.host}:{plain_port}"], TLS_DOORS, "tls.d", SIM_PROCS,
                       whitelist=reg.version(), keys=keys)
        platforms = {True: Platform(store, broker.host, broker.port, ingest=False,
                                    site_keys=site.keys, tls_ca=str(ca.cert)),
                     False: Platform(store, broker.host, plain_port, ingest=False,
                                     site_keys=site.keys)}
        platforms[False].fanout_bulk = False  # like for like: paho's connection on both
        try:
            sim.expect("online", timeout=600)
            for p in platforms.values():
                p.start()
            for p in platforms.values():
                _wait(lambda p=p: len(p.cache_states) >= TLS_DOORS, 600,
                      "every door's whitelist state")
                if not p.flush(600):
                    raise TimeoutError("the platform's messages did not reach the broker")
            devices = sorted(platforms[True].cache_states)
            pids: dict[str, int | list[int] | None] = {"sim": sim.pids, "broker": broker.pid}
            got: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
            for i, ref in enumerate(cards):
                tls = i % 2 == 1
                got[tls].append(_lost_card(platforms[tls], reg, sim, devices, ref, pids))
                # the other platform's record of the doors, brought to what they now hold
                _wait(lambda o=platforms[not tls]: all(
                    int(o.cache_states.get(d, {}).get("version", 0)) >= reg.version()
                    for d in devices), 60, "the other platform seeing the doors' answers")
            for tls, prefix in ((True, "scale.tls_lost_card_"), (False, "scale.tls_baseline_lost_card_")):
                lat = [x for r in got[tls] for x in r["lat"]]
                out[prefix + "p50_s"] = _p(lat, 0.5)
                out[prefix + "p95_s"] = _p(lat, 0.95)
                out[prefix + "answers_s"] = statistics.median(
                    r["stages"]["answered"] - r["stages"]["last_door"] for r in got[tls])
                out[prefix + "platform_cpu_s"] = statistics.median(r["platform"] for r in got[tls])
        finally:
            for p in platforms.values():
                p.stop()
            sim.close()
            store.close()


def _answers_cpu(out: dict[str, float], db_url: str, tmp: Path) -> None:
    """The platform's own cost of a fan-out's answers over TLS and over plain TCP: DOORS
    answers (QoS 0, as doors send them) published in bulk on the broker's plain listener,
    taken by a platform on each listener in turns; its CPU seconds are the process's less
    the publishing thread's."""
    from host_tools.services.mosquitto import TLSListener, free_port
    from host_tools.services.tlsgen import CA
    from reference_platform import fanout_writer
    from wire import common
    from wire.door import encode_cache_state

    ca = CA(tmp / "pki-answers")
    server = ca.server()
    plain_port = free_port()
    doors = [f"city.d{i}" for i in range(DOORS)]
    store = Store(db_url)
    used: dict[bool, list[float]] = {True: [], False: []}
    try:
        with Mosquitto(tls=TLSListener(ca.cert, server.cert, server.key),
                       plain_port=plain_port) as broker:
            for i in range(2 * ANSWER_ROUNDS):
                tls = i % 2 == 0
                version = i + 1
                answers = [(common.topic(d, "cache_state"), encode_cache_state(version))
                           for d in doors]
                p = Platform(store, broker.host, broker.port if tls else plain_port,
                             ingest=False, lease=False, tls_ca=str(ca.cert) if tls else None)
                with p:
                    if not p.connected.wait(60):
                        raise TimeoutError("the platform did not subscribe")
                    if not p.flush(60):
                        raise TimeoutError("the platform's announce did not reach the broker")
                    publisher = [0.0]
                    cpu0 = resource.getrusage(resource.RUSAGE_SELF)

                    def publish(answers: list[tuple[str, bytes]] = answers,
                                publisher: list[float] = publisher) -> None:
                        t0 = time.thread_time()
                        left = fanout_writer.publish_all(broker.host, plain_port, answers)
                        publisher[0] = time.thread_time() - t0
                        if left:
                            raise RuntimeError(f"{len(left)} answers not published")

                    got = p.wait_cache_states(doors, lambda s, v=version: s["version"] == v,
                                              120, then=publish)
                    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
                    if len(got) != len(doors):
                        raise RuntimeError(f"{len(doors) - len(got)} answers did not arrive")
                    used[tls].append(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime
                                     - cpu0.ru_stime - publisher[0])
    finally:
        store.close()
    out["scale.tls_answers_cpu_s"] = statistics.median(used[True])
    out["scale.tls_baseline_answers_cpu_s"] = statistics.median(used[False])


def _drain(broker: Mosquitto, db_url: str, instances: int, prefix: str,
           db_pid: int | None = None) -> dict[str, float]:
    """Every door online and the platforms subscribed, then DRAIN_EVENTS events at every door
    at once: events per s until all are acknowledged, and the CPU seconds each process used
    meanwhile (platform, simulator, broker, database), which shows the one that limits it."""
    sim = Sim([f"{broker.host}:{broker.port}"], DRAIN_DOORS, prefix)
    platforms = []
    try:
        sim.expect("online", timeout=300)
        platforms = [Platform(Store(db_url), broker.host, broker.port).start() for _ in range(instances)]
        for p in platforms:
            if not p.connected.wait(60):
                raise TimeoutError("a platform instance did not subscribe")
        pids = {"sim": sim.proc.pid, "broker": broker.pid, "db": db_pid}
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        before = {k: tree_cpu_s(pid) for k, pid in pids.items() if pid is not None}
        sim.send(f"record {DRAIN_EVENTS}")  # every door's backlog at once
        t0 = sim.expect("recorded")["t"]
        drained = sim.expect("drained", timeout=900)
        elapsed = drained["t"] - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        used = {k: tree_cpu_s(pids[k]) - v for k, v in before.items()}  # type: ignore[arg-type]
        stored = Store(db_url)
        n = stored.count()
        stored.close()
        if n < DRAIN_DOORS * DRAIN_EVENTS:
            raise RuntimeError(f"{n} events stored of {DRAIN_DOORS * DRAIN_EVENTS}")
        return {"rate": DRAIN_DOORS * DRAIN_EVENTS / elapsed, "elapsed": elapsed,
                "platform": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
                **used}
    finally:
        for p in platforms:
            p.stop()
        sim.close()


def run(names: set[str]) -> dict[str, float]:
    from host_tools.services.postgres import PostgreSQL

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # mosquitto inherits it
    out: dict[str, float] = {}
    with PostgreSQL() as pg, Mosquitto() as broker, tempfile.TemporaryDirectory() as tmp:
        if names & CITY_FIGURES:
            _online_and_lost_card(out, broker, pg.create_database("city"), Path(tmp))
        if any(n.startswith(("scale.tls_lost_card_", "scale.tls_baseline_lost_card_"))
               for n in names):
            _tls_lost_card(out, pg.create_database("tls"), Path(tmp))
        if names & {"scale.tls_answers_cpu_s", "scale.tls_baseline_answers_cpu_s"}:
            _answers_cpu(out, str(Path(tmp) / "answers.db"), Path(tmp))
        if names & {"scale.events_per_s", "scale.platform_cpu_s", "scale.sim_cpu_s",
                    "scale.broker_cpu_s", "scale.db_cpu_s"}:
            got = _drain(broker, pg.create_database("drain"), 2, "drain.d", pg.pid)
            out["scale.events_per_s"] = got["rate"]
            out["scale.platform_cpu_s"] = got["platform"]
            out["scale.sim_cpu_s"] = got["sim"]
            out["scale.broker_cpu_s"] = got["broker"]
            out["scale.db_cpu_s"] = got["db"]
        if "scale.baseline_events_per_s" in names:
            out["scale.baseline_events_per_s"] = _drain(broker, str(Path(tmp) / "p.db"), 1, "base.d")["rate"]
    return out
