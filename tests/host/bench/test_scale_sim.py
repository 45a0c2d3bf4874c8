"""The scale bench's driver of a door simulator process (host_tools/benchmarks/scale.py Sim):
a simulator that says nothing (its doors still connecting, say, to a broker that is gone)
ends the wait at its timeout with TimeoutError; the bench does not wait on it for ever."""

from __future__ import annotations

import threading

from host_tools.benchmarks.scale import Sim, SimGroup


def _expect_in_thread(sim: Sim | SimGroup, timeout: float) -> tuple[threading.Thread, list[object]]:
    got: list[object] = []

    def wait() -> None:
        try:
            got.append(sim.expect("online", timeout=timeout))
        except Exception as e:  # noqa: BLE001 - what the wait ended with is the result
            got.append(e)

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread, got


def test_a_silent_simulator_times_out() -> None:
    sim = Sim(["127.0.0.1:1"], 2, "silent.d")  # port 1 refuses: the doors retry, never online
    try:
        thread, got = _expect_in_thread(sim, 1.0)
        thread.join(30)
        assert not thread.is_alive(), "the wait outlived its timeout"
        assert len(got) == 1 and isinstance(got[0], TimeoutError), got
        assert sim.proc.poll() is None  # still running: the timeout, not its end, stopped the wait
    finally:
        sim.close()


def test_a_silent_group_times_out_and_its_end_is_seen() -> None:
    group = SimGroup(["127.0.0.1:1"], 4, "silent.g", procs=2)
    try:
        thread, got = _expect_in_thread(group, 1.0)
        thread.join(30)
        assert not thread.is_alive(), "the wait outlived its timeout"
        assert isinstance(got[0], TimeoutError), got
    finally:
        group.close()
    thread, got = _expect_in_thread(group.sims[0], 5.0)  # ended: its end, not a timeout
    thread.join(30)
    assert isinstance(got[0], RuntimeError) and not isinstance(got[0], TimeoutError), got
