"""The qstr pool arithmetic behind vdev.qstr_headroom, against what the unix port printed
when the door's names crossed a pool (1,260 names in six pools, the 1,261st opened a seventh)."""

import subprocess

import pytest

from host_tools.benchmarks.vdev import _FIRST_POOL_PROGRAM, first_pool_entries, qstr_headroom, qstr_pools
from host_tools.paths import micropython


def test_headroom_counts_to_the_next_pool():
    assert qstr_headroom(20, 6, 1260) == 0
    assert qstr_headroom(20, 6, 1252) == 8
    assert qstr_headroom(20, 5, 616) == 4
    assert qstr_headroom(20, 7, 1261) == 1279


def test_pools_read_from_qstr_info_lines():
    text = ("qstr pool: n_pool=6, n_qstr=1260, n_str_data_bytes=13779, n_total_bytes=28019\n"
            "qstr pool: n_pool=7, n_qstr=1261, n_str_data_bytes=13793, n_total_bytes=42177\n")
    assert qstr_pools(text) == [(6, 1260), (7, 1261)]
    with pytest.raises(RuntimeError):
        qstr_pools("Traceback (most recent call last):\nMemoryError\n")


def test_first_pool_measured_on_the_interpreter():
    out = subprocess.run([micropython(), "-c", _FIRST_POOL_PROGRAM], capture_output=True,
                         text=True, check=True).stdout
    reports = qstr_pools(out)
    first = first_pool_entries(reports)
    assert first == 20  # MicroPython 1.28's unix port; the figures in the docs assume it
    # every pool after it is twice the one before: the report after each name agrees
    for pools, names in reports:
        assert 0 <= qstr_headroom(first, pools, names) < first * 2 ** (pools - 1)


def test_no_second_pool_is_an_error():
    with pytest.raises(RuntimeError):
        first_pool_entries([(1, 3), (1, 4)])
