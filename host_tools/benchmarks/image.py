"""The firmware image's heap under a door's whole workload, on the 32-bit unix image.

One template door is made once: commissioned (config, key file, a 100,000-card whitelist),
with a journal holding a 50,000-event backlog (the uplink benchmark's filler writes it).
Each trial copies it and boots `build/unix32/micropython` (`doorctl build unix32`) with
`-X heapsize=H`, MQTT to mosquitto without TLS, and runs the fixed workload: card swipes at
5/s through the PN532 emulator (a resident's card granted, a stranger's refused), the 50,000
backlog drained to the platform, a 1,000-card delta, a full 100,000-card snapshot update, a
held-open alarm and a patrol command. A trial fits when all of it reaches the platform and
the firmware is still up and never met a MemoryError (not even one it recovered from by
reconnecting: a trial stops at the first one). The heap is searched on a 4 KiB grid by
halving (the workload takes about a minute per trial).

Peak live heap and fragmentation come from a second run 8 KiB above the smallest heap: the
firmware's own samples (status heap_peak_alloc) and the console's every 2 s (a collection,
then mem_info's heap in use and largest free block).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from host_tools.benchmarks import Outcome, failing
from host_tools.cards.kit import SiteKit
from host_tools.console import mpremote
from host_tools.image.steps import Steps
from host_tools.image.unix32 import build_unix32
from host_tools.mpy_build import build_device_tree
from host_tools.paths import micropython, micropython_env
from host_tools.pn532_emu import LocalCard, PN532Emulator
from host_tools.services.mosquitto import Mosquitto
from host_tools.vdev.device import VirtualDevice
from host_tools.vdev.io_client import VirtualIO
from host_tools.vdev.provision import provision
from offline_cache import fmt
from reference_platform.commands import command_key
from reference_platform.distribute import push
from reference_platform.ingest import Platform
from reference_platform.store import Store
from wire import codes as ev

DEVICE = "bench.image.d1"
CARDS = 100_000
BACKLOG = 50_000
DELTA = 1_000
GOAL_KIB = 64
HEAPS_KIB = (32, 160)  # the search's bounds
TLS_HEAPS_KIB = (64, 256)  # over TLS (goal 112; 84 on 3 December)
# The test suite's smoke run: a small whitelist and backlog, one trial per search.
SMOKE = {"CARDS": 300, "BACKLOG": 200, "DELTA": 20, "HEAPS_KIB": (156, 160),
         "TLS_HEAPS_KIB": (156, 160)}
# The sampled run: the console probe (a compiled program) needs room beside the firmware.
SAMPLE_MARGIN_KIB = 8
SAMPLED_HEAP_KIB = 96
SWIPE_HZ = 5
HELD_OPEN_MS = 2500
FLASH_BYTES = 8 << 20
UPLINK_DEVICE = Path(__file__).with_name("device") / "uplink_device.py"

FIGURES = {
    "image.heap_min_kib": "unix32 image: smallest heap (4 KiB grid) in which the commissioned "
                          "firmware, MQTT without TLS, 100k-card whitelist, 50k-event backlog, "
                          "runs the fixed workload (swipes at 5/s, 1k delta, 100k snapshot, "
                          "backlog drained, held-open alarm, patrol) 3 times in a row, KiB (goal 64)",
    "image.heap_min_tls_kib": "unix32 image: the same smallest heap with MQTT over TLS to a "
                              "mosquitto TLS listener (the door checks the broker's certificate "
                              "against its CA); the MicroPython heap only: mbedTLS's buffers come "
                              "from the C heap on the unix port, as from the IDF heap on the "
                              "ESP32, KiB (goal 112)",
    "image.heap_peak_kib": "unix32 image: peak live heap during that workload (after a "
                           "collection; the firmware's own samples and the console's every 2 s) "
                           "at image.heap_min_kib + 8 KiB, KiB",
    "image.largest_free_min_kib": "unix32 image: smallest largest-free-block after a collection, "
                                  "sampled every 2 s during that run (fragmentation), KiB",
    "image.app_import_kib": "unix32 image: live heap the application's modules (firmware, wire, crypto, "
                            "offline_cache) take once imported from the image, KiB (replaces the "
                            "WASI heap32 estimate; 64-bit from ROMFS: heap32.app_rom_64_kib, 83)",
    "image.binary_kib": "unix32 image: size of the binary with everything frozen in, KiB",
    "image.idle_heap_kib": "unix32 image: heap in use by the commissioned firmware connected and "
                           "idle (after a collection), KiB (beside vdev.heap_peak_kib, 64-bit)",
}


class WorkloadFailed(RuntimeError):
    """The firmware did not finish the workload in this heap."""


OUT_OF_MEMORY = (b"MemoryError", b"out of memory")


def out_of_memory(dev: VirtualDevice) -> bool:
    """The firmware met a MemoryError (even one it recovered from): the heap does not fit."""
    log = bytes(dev.console_log)
    return any(m in log for m in OUT_OF_MEMORY)


def _check_memory(dev: VirtualDevice, what: str) -> None:
    if out_of_memory(dev):
        raise WorkloadFailed(f"out of memory during {what}")


def _wait(cond: Callable[[], bool], timeout: float, what: str, dev: VirtualDevice | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if dev is not None and out_of_memory(dev):
            raise WorkloadFailed(f"out of memory while waiting for {what}")
        if time.monotonic() > deadline:
            raise WorkloadFailed(f"timed out waiting for {what}")
        time.sleep(0.05)


class Template:
    """The commissioned door's state directory, made once on the PyPI interpreter."""

    def __init__(self, tmp: Path, broker: Mosquitto, name: str = "template",
                 cards: int | None = None, backlog: int | None = None,
                 door: dict[str, int] | None = None, tls_ca: Path | None = None,
                 reader: dict[str, int] | None = None) -> None:
        """`tls_ca`: the broker speaks TLS with a certificate of this CA; the door is
        commissioned with it (as `doorctl commission --tls-ca`), the platform uses it too.
        `reader`: the config's `cards` entries (the card task's timings, docs/card-profile.md)."""
        cards = CARDS if cards is None else cards
        backlog = BACKLOG if backlog is None else backlog
        self.site = SiteKit()
        self.backlog = backlog
        # The platform signs its acknowledgements with the site's command key: a commissioned
        # door frees nothing on an unsigned one.
        self.platform_kw: dict[str, Any] = {"ack_key": self.site.command_key}
        extra: dict[str, bytes] = {}
        if tls_ca is not None:
            self.platform_kw["tls_ca"] = str(tls_ca)
            extra["ca.pem"] = tls_ca.read_bytes()
        self.resident, self.resident_ref = self.site.issue()
        self.stranger = SiteKit(self.site.site_id + 1).issue()[0]
        refs = [self.resident_ref] + [i.to_bytes(8, "big") for i in range(1, cards)]
        self.cards = [(r, fmt.ACTIVE, False) for r in refs]
        self.state = tmp / name
        self.state.mkdir()
        # The ESP32's 8 MiB data partition: a 100k snapshot update needs room for the new
        # file beside the old one (1.5 MB each), more than the virtual board's default 2 MiB.
        (self.state / "flash.img").write_bytes(b"\xff" * FLASH_BYTES)
        broker_cfg: dict[str, Any] = {"host": broker.host, "port": broker.port, "keepalive": 5}
        if tls_ca is not None:
            broker_cfg["ca"] = "ca.pem"
        if reader:
            extra_cfg: dict[str, Any] = {"cards": dict(reader)}
        else:
            extra_cfg = {}
        config = self.site.door_config(DEVICE, broker=broker_cfg,
                                       door=door or {"unlock_ms": 1500, "prealarm_ms": 1500,
                                                     "held_open_ms": HELD_OPEN_MS, "deny_ms": 150},
                                       **extra_cfg)
        with VirtualDevice(self.state, heap="512K") as dev:
            provision(dev.pty, config=config, keys=self.site.door_keys(),
                      cache=self.site.snapshot(1, self.cards[:1]), extra=extra)
            with Platform(Store(str(tmp / f"{name}.db")), broker.host, broker.port,
                          **self.platform_kw) as platform:
                platform.connected.wait(10)
                platform.cache_states.pop(DEVICE, None)
                dev.restart()
                # Online first: the whitelist state a door publishes as it connects would
                # otherwise answer the push's first pieces, and four such answers end it.
                _wait(lambda: DEVICE in platform.cache_states, 60, "the template door online")
                push(platform, DEVICE, self.site.snapshot(2, self.cards), timeout=300,
                     key=self.site.cache_key)
        if not backlog:
            return
        journal = self.state / "journal.img"
        journal.unlink(missing_ok=True)
        from board.virtual import JOURNAL_BLOCKS

        fill = subprocess.run(
            [micropython(), "-X", "heapsize=256K", str(UPLINK_DEVICE), str(journal),
             str(JOURNAL_BLOCKS), broker.host, "1", DEVICE, "1", str(backlog), "0", "fill-only"],
            env=micropython_env(build_device_tree()[0].parents[1]), cwd=tmp,
            capture_output=True, text=True, timeout=600)
        if "APPENDED" not in fill.stdout:
            raise RuntimeError("could not fill the journal: " + (fill.stdout + fill.stderr)[-300:])

    def copy(self, dest: Path) -> Path:
        shutil.copytree(self.state, dest)
        for f in ("ready.json", "vdev.json", "vdev.lock", "console.log", "stderr.log"):
            (dest / f).unlink(missing_ok=True)
        return dest


class Swiper(threading.Thread):
    """Swipes at SWIPE_HZ, alternating the resident's card (granted) and a stranger's
    (refused), until stopped; counts swipes."""

    def __init__(self, emu: PN532Emulator, granted: Any, refused: Any) -> None:
        super().__init__(daemon=True)
        self.emu, self.cards = emu, [LocalCard(granted.process, granted.uid),
                                     LocalCard(refused.process, refused.uid)]
        self.swipes = 0
        self.stop = threading.Event()

    def run(self) -> None:
        period = 1 / SWIPE_HZ
        while not self.stop.is_set():
            t = time.monotonic()
            self.emu.present(self.cards[self.swipes % 2])
            self.swipes += 1
            self.stop.wait(period * 0.6)
            self.emu.remove()
            self.stop.wait(max(0.0, period - (time.monotonic() - t)))


def run_workload(template: Template, broker: Mosquitto, tmp: Path, heap_kib: int, binary: str,
                 sample: Callable[[VirtualDevice], None] | None = None) -> VirtualDevice:
    """One trial; WorkloadFailed when the firmware does not get through it. Returns the
    (stopped) device, whose state directory keeps its logs."""
    state = template.copy(tmp / f"h{heap_kib}-{time.monotonic_ns()}")
    broker.restart()  # nothing retained from the trial before
    with Platform(Store(str(state / "platform.db")), broker.host, broker.port,
                  **template.platform_kw) as platform:
        platform.connected.wait(10)
        dev = VirtualDevice(state, heap=f"{heap_kib}K", image="unix32")
        dev._binary = binary
        try:
            try:
                dev.start(timeout_s=60)
            except Exception as e:  # noqa: BLE001 - not even booting is "does not fit"
                raise WorkloadFailed(f"did not boot: {e}") from None
            emu = PN532Emulator()
            with emu.connect(dev.reader_addr), VirtualIO(dev.io_addr) as io:
                swiper = Swiper(emu, template.resident, template.stranger)
                swiper.start()
                sampler_stop = threading.Event()
                sampler = threading.Thread(target=_sampling, args=(dev, sample, sampler_stop),
                                           daemon=True) if sample else None
                if sampler:
                    sampler.start()
                try:
                    _steps(template, platform, io, dev)
                    _wait(lambda: platform.store.count(DEVICE) >= template.backlog, 240,
                          "the backlog drained", dev)
                finally:
                    swiper.stop.set()
                    swiper.join(5)
                    sampler_stop.set()
                    if sampler:
                        sampler.join(30)
                _wait(lambda: any(e[1] == ev.HELD_OPEN for e in platform.store.events(DEVICE)), 60,
                      "the held-open alarm at the platform")
                # Every swipe decided and at the platform (the decision events after the backlog).
                def decided() -> int:
                    return sum(1 for e in platform.store.events(DEVICE)
                               if e[1] in (ev.ACCESS_GRANTED, ev.ACCESS_DENIED))
                _wait(lambda: decided() >= swiper.swipes * 0.9, 30,
                      f"decisions for {swiper.swipes} swipes at the platform")
                # Only what is checked: the whole report is a ~800-byte JSON string built in the
                # door's heap by the virtual board's I/O channel, which a real board has not.
                final = io.status("ready", "heap_peak_alloc")
                if not dev.alive() or not final.get("ready"):
                    raise WorkloadFailed("the firmware is not running at the end")
                if isinstance(sample, Sampler):
                    sample.firmware_peak = int(final.get("heap_peak_alloc", 0))
            if out_of_memory(dev) or b"MemoryError" in dev.stderr_tail(4000).encode():
                raise WorkloadFailed("the firmware ran out of memory during the workload")
        except WorkloadFailed as e:
            raise WorkloadFailed(f"{e} (last output: {dev.last_error()})") from None
        except Exception as e:  # noqa: BLE001 - any failure in this heap means it does not fit
            raise WorkloadFailed(f"{type(e).__name__}: {e} ({dev.last_error()})") from None
        finally:
            dev.stop()
    return dev


def _steps(template: Template, platform: Platform, io: VirtualIO, dev: VirtualDevice) -> None:
    site = template.site
    _wait(lambda: platform.cache_states.get(DEVICE, {}).get("version") == 2
          or platform.store.count(DEVICE) > 0, 60, "the door online", dev)
    n = len(template.cards)
    delta = [(i.to_bytes(8, "big"), fmt.LOST, False) for i in range(n, n + DELTA)]
    push(platform, DEVICE, site.delta(3, 2, delta), timeout=60, key=site.cache_key)
    _check_memory(dev, "the delta")
    push(platform, DEVICE, site.snapshot(4, template.cards[:-DELTA] + delta), timeout=120,
         key=site.cache_key)
    _check_memory(dev, "the snapshot")
    # Held open: the door contact stays open past the limit (its alarm reaches the platform
    # behind the backlog, checked at the end).
    io.set_input("door_contact", "open")
    time.sleep(HELD_OPEN_MS / 1000 + 2.5)
    io.set_input("door_contact", "closed")
    cmd = platform.command(DEVICE, "patrol", {}, command_key(site.keys))
    if platform.wait_reply(cmd, 30) is None:
        raise WorkloadFailed("no reply to the patrol command")


# After a collection: what is live, and the largest block a new allocation could get.
PROBE = "import gc, micropython\ngc.collect()\nmicropython.mem_info()"


def _sampling(dev: VirtualDevice, sample: Callable[[VirtualDevice], None] | None,
              stop: threading.Event) -> None:
    while sample is not None and not stop.wait(2.0):
        sample(dev)


class Sampler:
    """Reads peak heap and the largest free block from the device's console."""

    def __init__(self) -> None:
        self.peak = 0
        self.firmware_peak = 0  # the firmware's own heap_peak_alloc, read at the end
        self.largest_free_min: int | None = None

    def __call__(self, dev: VirtualDevice) -> None:
        try:
            out = mpremote(dev.pty, "exec", PROBE, timeout=20)
        except Exception:  # noqa: BLE001 - a busy console: the next sample
            return
        peak = re.search(r"used: (\d+)", out)
        free = re.search(r"max free sz: (\d+)", out)
        if peak:
            self.peak = max(self.peak, int(peak.group(1)))
        if free:
            blocks = int(free.group(1))
            self.largest_free_min = blocks if self.largest_free_min is None \
                else min(self.largest_free_min, blocks)


FIT_TRIALS = 3  # a heap fits when the workload gets through it this many times in a row


def _fits(template: Template, broker: Mosquitto, tmp: Path, kib: int, binary: str,
          trials: int = FIT_TRIALS) -> bool:
    """The workload got through `trials` times in a row in this heap: near the figure a heap
    can pass once and fail the next time (at 64 KiB on 5 December, 2 passes in 3 on a build
    that was not kept), and a figure one lucky trial sets is not one a door can rely on."""
    for _ in range(trials):
        try:
            run_workload(template, broker, tmp, kib, binary)
        except WorkloadFailed:
            return False
    return True


def heap_min_kib(template: Template, broker: Mosquitto, tmp: Path, binary: str,
                 bounds: tuple[int, int] | None = None) -> float:
    """Smallest heap on a 4 KiB grid in [low, high] (HEAPS_KIB) that fits (FIT_TRIALS passes
    in a row), by halving."""
    low, high = bounds or HEAPS_KIB
    if not _fits(template, broker, tmp, high, binary):
        raise RuntimeError(f"the workload does not finish even in {high} KiB")
    while high - low > 4:
        mid = (low + high) // 2 // 4 * 4
        if _fits(template, broker, tmp, mid, binary):
            high = mid
        else:
            low = mid
    return float(high)


IMPORT_PROBE = """import gc, sys
gc.collect()
before = gc.mem_alloc()
for name in sys.argv[1:]:
    __import__(name)
gc.collect()
print("LIVE", gc.mem_alloc() - before)
"""


def application_modules() -> list[str]:
    """Every module of the application packages, by dotted name."""
    from host_tools.boards import HOST_SIDE
    from host_tools.paths import DEVICE_PACKAGES, REPO_ROOT, device_sources

    names = []
    for src in device_sources():
        rel = src.relative_to(REPO_ROOT)
        if rel.parts[0] in DEVICE_PACKAGES and rel.parts[0] != "board" \
                and rel.as_posix() not in HOST_SIDE:  # neither frozen nor imported by the door
            names.append(".".join(p for p in rel.with_suffix("").parts if p != "__init__"))
    return names


def app_import_kib(binary: str) -> float:
    proc = subprocess.run([binary, "-X", "heapsize=256K", "-c", IMPORT_PROBE, *application_modules()],
                          capture_output=True, text=True, timeout=60, cwd="/",
                          env={"MICROPYPATH": ".frozen"})
    found = re.search(r"LIVE (\d+)", proc.stdout)
    if proc.returncode != 0 or found is None:
        raise RuntimeError("importing the application failed: " + (proc.stdout + proc.stderr)[-300:])
    return int(found.group(1)) / 1024


def run(names: set[str]) -> dict[str, Outcome]:
    out: dict[str, Outcome] = {}
    binary = str(build_unix32(Steps(quiet=True)).binary)
    with failing(out, "image.app_import_kib"):
        out["image.app_import_kib"] = app_import_kib(binary)
    out["image.binary_kib"] = Path(binary).stat().st_size / 1024
    if not names & {"image.heap_min_kib", "image.heap_peak_kib", "image.largest_free_min_kib",
                    "image.idle_heap_kib"}:
        if "image.heap_min_tls_kib" in names:
            with failing(out, "image.heap_min_tls_kib"):
                out["image.heap_min_tls_kib"] = heap_min_tls_kib(binary)
        return out
    with tempfile.TemporaryDirectory() as tmp_name, Mosquitto() as broker:
        tmp = Path(tmp_name)
        template = Template(tmp, broker)
        with failing(out, "image.heap_min_kib"):
            if "image.heap_min_kib" in names:
                out["image.heap_min_kib"] = heap_min_kib(template, broker, tmp, binary)
        fig = {"image.heap_peak_kib", "image.largest_free_min_kib"}
        with failing(out, *fig):
            if names & fig:
                sampler = Sampler()
                found = out.get("image.heap_min_kib")
                heap = int(found) + SAMPLE_MARGIN_KIB if isinstance(found, float) else SAMPLED_HEAP_KIB
                run_workload(template, broker, tmp, heap, binary, sample=sampler)
                out["image.heap_peak_kib"] = max(sampler.peak, sampler.firmware_peak) / 1024
                if sampler.largest_free_min is None:
                    raise RuntimeError("no heap sample was read from the console")
                out["image.largest_free_min_kib"] = sampler.largest_free_min * 16 / 1024
        with failing(out, "image.idle_heap_kib"):
            if "image.idle_heap_kib" in names:
                out["image.idle_heap_kib"] = _idle_heap_kib(template, broker, tmp, binary)
    with failing(out, "image.heap_min_tls_kib"):
        if "image.heap_min_tls_kib" in names:
            out["image.heap_min_tls_kib"] = heap_min_tls_kib(binary)
    return out


def heap_min_tls_kib(binary: str, bounds: tuple[int, int] | None = None,
                     cards: int | None = None, backlog: int | None = None) -> float:
    """image.heap_min_kib with the broker behind TLS: a CA and the broker's certificate made
    for this run (host_tools/services/tlsgen.py), mosquitto's TLS listener, the door
    commissioned with the CA."""
    from host_tools.services.mosquitto import TLSListener
    from host_tools.services.tlsgen import CA

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        ca = CA(tmp / "pki")
        server = ca.server()
        with Mosquitto(tls=TLSListener(ca.cert, server.cert, server.key)) as broker:
            template = Template(tmp, broker, "template-tls", cards, backlog, tls_ca=ca.cert)
            return heap_min_kib(template, broker, tmp, binary, bounds or TLS_HEAPS_KIB)


def _idle_heap_kib(template: Template, broker: Mosquitto, tmp: Path, binary: str) -> float:
    state = template.copy(tmp / "idle")
    (state / "journal.img").unlink()  # no backlog: connected and idle
    dev = VirtualDevice(state, heap="128K", image="unix32")
    dev._binary = binary
    with dev, VirtualIO(dev.io_addr) as io:
        _wait(lambda: io.status().get("uplink") == "connected", 30, "the door online")
        time.sleep(3)
        st = io.status()
        return float(128 * 1024 - st["heap_free"]) / 1024
