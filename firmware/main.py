"""Firmware entry: binds a board to the application tasks and runs them forever."""

import asyncio
import gc
import os
import sys

from firmware import VERSION
from firmware.log import log, set_clock

# Filled in by the running firmware; read by patrol reports, the console and benchmarks.
status = {"version": VERSION, "ready": False, "heap_free": 0, "heap_peak_alloc": 0}
# The running firmware's objects, for the console (self-test, diagnostics).
running = {}


def _forget(name):
    """Drop a firmware module the door needs only at boot or now and then (commissioning,
    power-loss report, setup check): its module object, globals and functions are freed,
    and being frozen in the image it imports again without a compile when next needed."""
    if sys.modules.pop("firmware." + name, None) is not None:
        import firmware

        try:
            delattr(firmware, name)
        except AttributeError:
            pass


async def _housekeeping(board):
    """Collect garbage at a quiet moment and keep heap figures for the status report."""
    while True:
        gc.collect()
        free, alloc = gc.mem_free(), gc.mem_alloc()
        status["heap_free"] = free
        if alloc > status["heap_peak_alloc"]:
            status["heap_peak_alloc"] = alloc
        await asyncio.sleep_ms(1000)


def _import_kept(board, cfg):
    """Import the modules this door keeps at once, after a collection, before the boot's work
    (the journal's recovery, the whitelist's scan) strews its garbage: their objects then lie
    together low in the heap, not one by one among the holes that garbage leaves, where they
    would keep the workload's free space in pieces. The boot imports them again by name."""
    gc.collect()
    import crypto.keystore  # noqa: F401 - each import here is for its place in the heap

    if board.journal_dev is not None:
        import firmware.events  # noqa: F401
        import firmware.journal  # noqa: F401

        if cfg.get("broker"):
            import firmware.clock_trust  # noqa: F401
            import firmware.uplink  # noqa: F401
    if board.relay is not None:
        import firmware.commands  # noqa: F401
        import firmware.door_task  # noqa: F401

        if board.reader_uart is not None:
            import firmware.card_task  # noqa: F401

            if "site_id" in cfg:  # commissioned: a key store with the whitelist's key
                import firmware.cache_sync  # noqa: F401
                import offline_cache.cache  # noqa: F401
                import offline_cache.content  # noqa: F401


def _keystore(board):
    """The door's key store (keys.json), loaded once; None without one (not commissioned)."""
    if "keystore" not in running:
        keystore = None
        try:
            from crypto.keystore import KeyStoreError, SoftwareKeyStore

            keystore = SoftwareKeyStore.load(board.fs_root.rstrip("/") + "/keys.json")
        except KeyStoreError as e:
            log("cards: no key store:", e)
            status["cards"] = "no_keys"
        running["keystore"] = keystore
    return running["keystore"]


def _start_journal(board, cfg):
    """The journal, its recorder and (with a broker configured) the uplink."""
    from firmware.events import Recorder
    from wire import codes as events
    from firmware.journal import Journal
    from firmware.power_loss import last_alive

    dev = board.journal_dev
    if dev is None:
        return None
    journal = Journal(dev)
    boot = board.boot_count
    recorder = Recorder(journal, board.clock, boot)
    running["journal"] = journal
    running["recorder"] = recorder
    running["last_alive"] = last_alive(journal)  # before this boot's first record
    recorder.record(events.BOOT, boot)
    broker = cfg.get("broker")
    if broker:
        from firmware.uplink import Uplink

        uplink = Uplink(journal, cfg["device_id"], boot, VERSION, broker,
                        fs_root=board.fs_root, status=status)
        recorder.listeners.append(lambda seq, code, arg: uplink.kick())
        # Acks free journal space, and a time is trusted, only with the platform's MAC under
        # the site's command key.
        uplink.keystore = _keystore(board)
        running["uplink"] = uplink
        if "site_id" in cfg:  # commissioned (doorctl commission): register on every connection
            uplink.registration = lambda: _registration(cfg, broker, uplink.keystore)  # made when sent: not kept
        uplink.on_time = _time_sync(board, recorder, uplink)
        uplink.recorder = recorder
        uplink.utc = board.clock.time
    return journal


def _time_sync(board, recorder, uplink):
    """The platform's times through firmware/clock_trust.py; a setting reaches the uplink's
    time base, the journal (`time_set`), the command gate and the patrol report. Returns
    the uplink's `on_time`: False when refused (counted, logged once a minute)."""
    import struct

    from wire import codes as events
    from firmware.clock_trust import TimeSync

    sync = TimeSync(board.clock, (running.get("last_alive") or (False, 0))[1])
    running["time_sync"] = sync

    def time_set(epoch_s, signed):
        mono = recorder.mono_s()
        uplink.timebase.set(epoch_s, mono, signed)
        status["clock_synced"] = True
        status["clock_trusted"] = bool(signed)
        recorder.record(events.TIME_SET, 1 if signed else 0, struct.pack("<II", epoch_s, mono))
        commands = running.get("commands")
        if commands is not None:
            commands.gate.clock_set(signed)
        door = running.get("door")
        if door is not None:
            door.patrol.request()  # the platform sees the clock set (its alarm ends) at once

    sync.listeners.append(time_set)

    def on_time(epoch_ms, signed=False):
        why = sync.offer(epoch_ms, signed)
        if why:
            status["time_refused"] = sync.refused
            uplink.refuse(why, "time")
            return False
        return True

    return on_time


def _registration(cfg, broker, keystore=None):
    """The retained `register` message: what this door was commissioned as (no keys, no
    personal data; docs/protocol.md "Registration"). `keys`: "door" when the door holds its
    own command and cache keys, so the platform signs with those (else the site-wide ones)."""
    from wire.door import encode_register

    cards = cfg.get("cards") or {}
    door = cfg.get("door") or {}
    return encode_register(
        cfg["site_id"], cfg.get("door_no", 0), VERSION,
        "fail-safe" if door.get("fail_safe") else "fail-secure",
        ["desfire_ev2"] + [k for k in ("legacy_uid", "legacy_classic") if cards.get(k)],
        broker.get("ca") or broker.get("ssl"), broker.get("cert"), cfg.get("commissioned_at", 0),
        getattr(keystore, "scope", "site"))


def _report_power_loss(board, door):
    """The controller itself lost power: `power_restored` (arg 1) with the UTC time of the
    last record before the loss when the journal knows it, and the outage in seconds when
    the board's clock survived it (0: unknown)."""
    from firmware.power_loss import outage

    seen, lost_at = running.get("last_alive") or (False, 0)
    secs = outage(seen, lost_at, board.reset_cause(), board.clock.time())
    _forget("power_loss")  # boot only (with last_alive, used before it)
    if secs is not None:
        door.machine.power_restored(secs, lost_at, 1)


async def _journal_maintenance(journal):
    """Erase the next journal sector ahead of need, while the door is idle."""
    while True:
        journal.maintain()
        status["journal_depth"] = journal.depth()
        status["last_seq"] = journal.next_seq - 1
        await asyncio.sleep_ms(500)


def _start_door(board, cfg):
    """The door state machine bound to the board, and its patrol reports (docs/door.md)."""
    from firmware.door_task import DoorTask

    recorder = running.get("recorder")
    journal = running.get("journal")
    uplink = running.get("uplink")
    providers = _report_values(board, journal, uplink)
    door = DoorTask(board, cfg, recorder.record if recorder else None, providers, status,
                    recorder.uptime if recorder else None)
    if uplink is not None:
        door.publish = uplink.publish_status
    running["door"] = door
    _report_power_loss(board, door)
    return door


def _report_values(board, journal, uplink):
    """The patrol report's values this module owns (firmware/patrol.py): one closure, not
    one per field, for as long as the door runs."""
    from firmware.patrol import ABSENT

    def value(key):
        if key == "setup":
            return setup_now(board)
        if key == "key_gen":
            return running["keystore"].generation  # key rotation progress
        if journal is not None:
            if key == "seq":
                return journal.next_seq - 1
            if key == "journal_depth":
                return journal.depth()
        if key == "link" and uplink is not None:
            return uplink.link_report()
        return ABSENT

    return value


def _hash_at_boot(content, status):
    """The whitelist's content hash into the status, or None and a log line when it cannot be
    made (heap, flash): out of boot that stopped the door; maintain_cache
    (firmware/card_task.py) makes it at its next round.

    Collected before and after: the hash's temporaries (a pass over main.bin when its
    recorded sum is gone) go where the heap is free now and are freed before the door's
    long-lived objects are made, so they leave no holes among them (a console command
    then still finds 2 KiB in one piece)."""
    gc.collect()
    try:
        status["cache_hash"] = content.update()
    except Exception as e:  # noqa: BLE001 - heap, flash
        status["cache_hash"] = None
        try:
            log("cards: content hash failed:", repr(e))
        except MemoryError:  # not even for the line: out of boot it stops the door
            pass
    gc.collect()


def _start_cards(board, cfg, door):
    """Key store, whitelist cache and the card task on the board's reader (docs/card-profile.md).

    A door without keys still polls its reader (the installer's self-test sees it) and
    refuses every card with `no_keys`; without a valid cache it refuses with `no_cache`."""
    from firmware.card_task import CardTask

    root = board.fs_root.rstrip("/")
    cache = None
    keystore = _keystore(board)
    if keystore is not None and keystore.has("cache"):
        from offline_cache.cache import Cache

        try:
            os.mkdir(root + "/cache")
        except OSError:
            pass
        cache = Cache(root + "/cache", keystore.key("cache"), cfg.get("site_id", keystore.site_id),
                      reserve_update=True)
        running["cache"] = cache
        status["cache_version"] = cache.version
        from offline_cache.content import Tracker

        content = Tracker(cache)  # the whitelist's content hash, reported with its version
        running["content"] = content
        _hash_at_boot(content, status)
        if cache.error:
            log("cards: cache:", cache.error)
    uplink = running.get("uplink")
    if uplink is not None:
        from firmware.cache_sync import CacheSync

        sync = CacheSync(cache, running.get("recorder"), status, uplink.publish, door.serve)
        sync.content = running.get("content")
        if sync.content is not None:
            sync.content.tick = door.serve
        sync.on_refused = uplink.refuse
        uplink.on_cache = sync.on_message
        uplink.on_connected = sync.publish_state
        running["cache_sync"] = sync
    task = CardTask(board, door, keystore, cache, cfg.get("door_no", 0), cfg.get("cards"), status)
    running["cards"] = task
    _check_setup(cfg, keystore, cache)
    return task


def _check_setup(cfg, keystore, cache):
    """Find disagreeing parts once at boot (firmware/setup_check.py): logged, in the status
    (with the live clock state, `setup`) and journalled as `setup_fault` for the platform's
    alarm list."""
    from firmware import setup_check
    from wire import codes as events

    problems = setup_check.problems(cfg, keystore, cache)
    bits = setup_check.fault_bits(problems)
    _forget("setup_check")  # imported again by setup_now, for a patrol report or the console
    running["setup"] = problems
    if not problems:
        return
    log("setup fault:", ", ".join(problems))
    recorder = running.get("recorder")
    if recorder is not None:
        recorder.record(events.SETUP_FAULT, bits)


def setup_now(board):
    """The boot's problems plus the clock's state now, for the patrol report and console."""
    from firmware.setup_check import with_clock

    try:
        return with_clock(running.get("setup"), board.clock)
    finally:
        _forget("setup_check")


def _start_commands(board, cfg, door):
    """Platform commands through the uplink, checked offline (firmware/commands.py)."""
    uplink = running.get("uplink")
    if uplink is None:
        return None
    from firmware import config
    from wire import codes as events
    from firmware.commands import CommandGate, Commands

    recorder = running.get("recorder")

    def write_config(changes):
        config.write_changes(board.fs_root, changes)
        if recorder is not None:
            recorder.record(events.CONFIG_CHANGED)

    def write_keys(args):
        from firmware import key_update

        ks = running.get("keystore")
        why = key_update.apply(ks, board.fs_root, cfg["device_id"], args)
        if not why:
            log("cards: key file generation", ks.generation)
            door.patrol.request()  # the platform sees the new generation in the next report
        return why

    gate = CommandGate(running.get("keystore"), cfg["device_id"], board.clock)
    commands = Commands(gate, door, recorder, uplink.on_time, write_config, write_keys)
    commands.on_forged = uplink.refuse
    running["commands"] = commands

    def on_command(cmd):
        return commands.handle(cmd, uplink.reply)

    uplink.on_command = on_command
    return commands


def _finish_commissioning(root):
    """A commissioning committed before the restart (or cut off half-way through being
    applied) takes effect now, before any of its files is read (firmware/staging.py)."""
    from firmware import staging

    moved = staging.complete(root)
    _forget("staging")  # boot only: the commissioning transaction's last step
    if moved >= 0:
        log("commissioning applied:", moved, "files")
        status["commissioned"] = True


async def main(board, extra_tasks=()):
    from firmware import config

    running["board"] = board
    running.pop("keystore", None)  # read again from this boot's flash
    set_clock(board.clock)
    log("firmware", VERSION, "board", board.name)
    _finish_commissioning(board.fs_root)
    cfg = config.load(board.fs_root)
    running["config"] = cfg
    _import_kept(board, cfg)
    tasks = [asyncio.create_task(_housekeeping(board))]
    journal = _start_journal(board, cfg)
    if journal is not None:
        tasks.append(asyncio.create_task(_journal_maintenance(journal)))
    if "uplink" in running:
        tasks.append(asyncio.create_task(running["uplink"].run()))
    if board.relay is not None:
        door = _start_door(board, cfg)
        tasks.append(asyncio.create_task(door.run()))
        tasks.append(asyncio.create_task(door.run_patrol()))
        if board.reader_uart is not None:
            cards = _start_cards(board, cfg, door)
            tasks.append(asyncio.create_task(cards.run()))
            if cards.cache is not None:
                from firmware.card_task import maintain_cache

                tasks.append(asyncio.create_task(
                    maintain_cache(cards.cache, status, running.get("content"), door.serve)))
        _start_commands(board, cfg, door)
    for make in extra_tasks:
        tasks.append(asyncio.create_task(make(board)))
    from firmware import gcpace

    gcpace.start()  # the long-lived objects are made: collections paced from here
    status["ready"] = True
    log("ready")
    await asyncio.gather(*tasks)


def run(board, extra_tasks=()):
    asyncio.run(main(board, extra_tasks))
