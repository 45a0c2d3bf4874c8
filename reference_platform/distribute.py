"""Whitelist files to a door over MQTT, in chunks, until the door says it holds the version
(docs/protocol.md, "Whitelist updates"). The file is signed (offline_cache) and so is each
piece (the same site cache key): the door checks the file's header before writing anything and
stops at the first piece that is not the platform's."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from offline_cache import fmt
from reference_platform.cache_tags import CacheTags

FANOUT_WAIT_S = 10.0  # how long every door together may take before each is served alone
STALLED_WAIT_S = 0.5  # before a transfer's round after one that moved the door no further, doubled


class Platform(Protocol):
    """What distribution needs of a platform (reference_platform/ingest.py's `Platform` is one):
    typed here so that ingest need not be imported, and ingest calls distribution only through
    the listener `attach` registers."""

    cache_states: dict[str, dict[str, Any]]
    registry: Any

    def publish(self, device: str, leaf: str, payload: bytes, retain: bool = False) -> None: ...

    def whitelist_for(self, device: str, data: bytes,
                      key: bytes | None = None) -> tuple[bytes, bytes | None]: ...

    def wait_cache_state(self, device: str, cond: Any,
                         timeout: float = 30.0) -> dict[str, Any] | None: ...

    def wait_cache_states(self, devices: Iterable[str], cond: Any, timeout: float,
                          then: Callable[[], None] | None = None) -> dict[str, dict[str, Any]]: ...


class DistributionError(RuntimeError):
    """The door refused the file (reason) or did not answer."""

    def __init__(self, reason: str, state: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.state = state


def file_version(data: bytes) -> int:
    return int(fmt.parse_header(data[:fmt.HDR_SIZE]).version)


def _key(platform: Platform, key: bytes | None) -> bytes:
    """The site's cache key: given, or the platform's (its `cache_key`, its card registry's)."""
    key = key or getattr(platform, "cache_key", None)
    if key is None and getattr(platform, "registry", None) is not None:
        key = platform.registry.key
    if key is None:
        raise DistributionError("no_cache_key")
    return bytes(key)


def shares_cache_key(platform: Platform) -> bool:
    """Whether every door gets the same pieces: not on a per-door site (each door's own)."""
    signer = getattr(platform, "signer", None)
    return signer is None or not signer.per_door


def chunks(data: bytes, key: bytes, start: int = 0) -> list[bytes]:
    """The file's pieces from byte `start`, each tagged with `key`: the same for every door
    that shares the site's cache key (a piece names no door), so a fan-out encodes them once."""
    return CacheTags(key).pieces(data, start)


def pieces_for(platform: Platform, device: str, data: bytes, start: int = 0,
               key: bytes | None = None, pieces: list[bytes] | None = None) -> list[bytes]:
    """The file's update messages for `device` from byte `start`, each tagged with the cache
    key (the door's own on a per-door site, the file then signed again for it:
    reference_platform/door_signing.py). `pieces`: the whole file already encoded by `chunks`
    with the site's key, used where the doors share it."""
    if pieces is not None and start == 0 and shares_cache_key(platform):
        return pieces
    signer = getattr(platform, "signer", None)
    if signer is not None:  # the door's own key (or the site's, as the site file records)
        tags = signer.tags(device)
        data = tags.sign_file(data)
    else:
        data, door_key = platform.whitelist_for(device, data, key)
        tags = CacheTags(_key(platform, door_key))
    return tags.pieces(data, start)


def send(platform: Platform, device: str, data: bytes, start: int = 0,
         key: bytes | None = None, pieces: list[bytes] | None = None) -> None:
    """Publish the file's pieces from byte `start` to one door (pieces_for)."""
    for piece in pieces_for(platform, device, data, start, key, pieces):
        platform.publish(device, "cache", piece)


def send_many(platform: Platform, files: dict[str, bytes], key: bytes | None,
              encoded: dict[int, list[bytes]]) -> None:
    """A fan-out: every door's file (device -> file), published together through the
    platform's `publish_many` where it has one (a connection of its own written in bulk,
    reference_platform/fanout_writer.py), else one message at a time."""
    messages = [(device, "cache", piece) for device, data in files.items()
                for piece in pieces_for(platform, device, data, key=key,
                                        pieces=encoded.get(id(data)))]
    publish_many = getattr(platform, "publish_many", None)
    if publish_many is not None:
        publish_many(messages)
    else:
        for device, leaf, piece in messages:
            platform.publish(device, leaf, piece)


def push(platform: Platform, device: str, data: bytes, timeout: float = 60.0,
         retries: int = 3, key: bytes | None = None) -> dict[str, Any]:
    """Send a signed snapshot or delta and wait until the door holds its version; resume
    where the door says it stopped. DistributionError(reason) when the door refuses it
    (base_mismatch: send a snapshot) or never answers; "incomplete" after `retries` rounds in
    a row that moved the door no further, or at `timeout`. A round that moved it on does not
    count: a door short of heap drops a piece now and then, and it is on its way."""
    version = file_version(data)
    start = 0
    deadline = time.monotonic() + timeout
    known = platform.cache_states.get(device)
    stalled = 0
    while stalled <= retries and time.monotonic() < deadline:
        platform.cache_states.pop(device, None)
        send(platform, device, data, start, key)

        # The door publishes its state when a file is installed or refused, when a piece
        # arrives out of order and when it (re)connects: any state after sending is news.
        state = platform.wait_cache_state(device, lambda s: True,
                                          max(0.1, deadline - time.monotonic()))
        if state is None:
            keep_known(platform, {device: known})
            raise DistributionError("no_answer")
        if state.get("reason"):
            raise DistributionError(str(state["reason"]), state)
        if state["version"] >= version:
            return state
        # A piece went missing (a reconnect, a piece the door had no heap for): go on from
        # what the door has of this file.
        have = int(state["have"]) if state["receiving"] == version else 0
        stalled = 0 if have > start else stalled + 1
        start = have
        if stalled and stalled <= retries:
            # Moved no further: a door short of heap for the moment (its backlog's batch, a
            # reconnect) is given time before the next round, not four rounds in half a second.
            time.sleep(min(STALLED_WAIT_S * 2 ** (stalled - 1), max(0.0, deadline - time.monotonic())))
    raise DistributionError("incomplete")


def keep_known(platform: Platform, known: dict[str, dict[str, Any] | None]) -> None:
    """Put back the last known state of each door that sent no answer to an update. Its
    answers come at QoS 0 and can be lost: without its state the door would drop out of
    `cache_states`, and so out of every sync over the known doors, until it reconnected.
    A door that answered meanwhile keeps its answer; the next sync sends it the update
    again, and a door that took the file says so (`stale_version`, its version)."""
    for device, state in known.items():
        if state is not None:
            platform.cache_states.setdefault(device, state)


def differs(state: dict[str, Any] | None, registry: Any, latest: int | None = None) -> bool:
    """The door holds the registry's latest version number, but other cards: its content
    hash (docs/cache-format.md) is not the registry's. `latest`: the registry's version, when
    the caller has it (a fan-out asks the database once, not once per door)."""
    if latest is None:
        latest = registry.version()
    if not state or int(state["version"]) != latest or not state.get("hash"):
        return False
    return bool(state["hash"] != registry.content_hash())


def sync(platform: Platform, registry: Any, devices: list[str] | None = None,
         timeout: float = 30.0) -> dict[str, str]:
    """Bring each door (default: every door that published its whitelist state) to the
    registry's version: a delta from what it holds, or a snapshot when it has lost its place.
    A door that holds the latest version with other cards (its content hash differs) gets a
    snapshot of a new version with the same cards (registry.resync()).
    Returns device -> "current" | "updated to N" | "replaced: ..." | "failed: reason".

    Every door is sent its update at once and then awaited together (a lost card reaches a
    site's doors in one round trip, not one per door); a door that refused its delta or did not
    answer in FANOUT_WAIT_S is then served on its own, with resumes and a snapshot if needed."""
    out: dict[str, str] = {}
    key = registry.key  # the site's cache key: tags each piece
    names = devices if devices is not None else sorted(platform.cache_states)
    latest = registry.version()
    wrong = [d for d in names if differs(platform.cache_states.get(d), registry, latest)]
    if wrong:
        registry.resync()
        snapshot = registry.snapshot()
        for device in wrong:
            try:
                push(platform, device, snapshot, timeout, key=key)
                out[device] = (f"replaced: it held other cards as v{registry.version() - 1}, "
                               f"now v{registry.version()}")
            except DistributionError as e:
                out[device] = f"failed: {e.reason}"
    target = registry.version()
    pending: dict[str, bytes] = {}
    updates: dict[int, bytes | None] = {}
    for device in names:
        if device in out:
            continue
        state = platform.cache_states.get(device)
        applied = int(state["version"]) if state else 0
        if applied not in updates:
            updates[applied] = registry.update_for(applied)
        data = updates[applied]
        if data is None:
            out[device] = "current"
        else:
            pending[device] = data
    shared_key = shares_cache_key(platform)  # else each door's own pieces
    by_data = {id(data): chunks(data, key) for data in updates.values()
               if data is not None and shared_key}
    known = {device: platform.cache_states.pop(device, None)  # any state from now on
             for device in pending}                              # is an answer

    def send_all() -> None:
        send_many(platform, pending, key, by_data)

    try:
        states = platform.wait_cache_states(
            pending, lambda s: not s.get("receiving") and (s["version"] >= target or "reason" in s),
            min(timeout, FANOUT_WAIT_S), then=send_all)
        for device, state in states.items():
            if int(state["version"]) >= target:
                out[device] = f"updated to {target}"
        for device, data in pending.items():
            if device in out:
                continue
            try:
                try:
                    push(platform, device, data, timeout, key=key)
                except DistributionError as e:
                    if e.reason == "stale_version" and int((e.state or {}).get("version", 0)) >= target:
                        pass  # it took the file already: its answer came after the fan-out's wait
                    elif e.reason not in ("base_mismatch", "stale_version"):
                        raise
                    else:
                        push(platform, device, registry.snapshot(), timeout, key=key)
                out[device] = f"updated to {registry.version()}"
            except DistributionError as e:
                out[device] = f"failed: {e.reason}"
    finally:  # an error midway (the registry's database gone) must not drop them either
        keep_known(platform, known)
    return out


class Resync:
    """The platform's whitelist listener: a door whose reported whitelist state is behind the
    registry's, or holds the latest version with other cards, is brought up to date."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    def wanted(self, state: dict[str, Any]) -> bool:
        latest = self.registry.version()
        return bool(int(state["version"]) < latest or differs(state, self.registry, latest))

    def __call__(self, platform: Platform, devices: list[str]) -> dict[str, str]:
        return sync(platform, self.registry, devices)


def attach(platform: Any, registry: Any) -> None:
    """Give `platform` a card registry: its cache key, and the listener that resyncs doors."""
    platform.registry = registry
    platform.whitelist_listener = Resync(registry)
