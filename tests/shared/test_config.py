# Device configuration (firmware/config.py), both interpreters: loading with defaults, and the
# `config` command's changes written beside what the commissioning tool wrote.
import json
import os

from firmware import config
from tests.scratch import fresh_dir


def _write(root, text):
    with open(root + "/config.json", "w") as f:
        f.write(text)


def _read(root):
    with open(root + "/config.json") as f:
        return json.loads(f.read())


def test_defaults_without_a_file_or_with_a_damaged_one():
    root = fresh_dir("config")
    assert config.load(root) == config.DEFAULTS
    _write(root, '{"device_id": "hz.b1')  # torn by hand: the door still boots on defaults
    assert config.load(root) == config.DEFAULTS
    _write(root, "[1, 2]")
    assert config.load(root) == config.DEFAULTS


def test_commanded_changes_go_under_door_or_the_top_and_keep_the_rest():
    root = fresh_dir("config")
    _write(root, json.dumps({"device_id": "hz.b1.d1", "broker": {"host": "h"},
                             "door": {"fail_safe": True, "unlock_ms": 3000}}))
    config.write_changes(root, {"unlock_ms": 5000, "patrol_interval_s": 60})
    got = _read(root)
    assert got["door"] == {"fail_safe": True, "unlock_ms": 5000}
    assert got["patrol_interval_s"] == 60 and "patrol_interval_s" not in got["door"]
    assert got["device_id"] == "hz.b1.d1" and got["broker"] == {"host": "h"}
    assert config.load(root)["door"]["unlock_ms"] == 5000
    assert "config.json.tmp" not in os.listdir(root)


def test_a_first_change_on_a_door_without_a_file_writes_one():
    root = fresh_dir("config")
    config.write_changes(root + "/", {"deny_ms": 700})  # a root with its slash, as on the ESP32
    got = _read(root)
    assert got["door"] == {"deny_ms": 700} and got["device_id"] == "unset"


def test_a_write_cut_before_its_rename_leaves_the_old_file_in_force():
    root = fresh_dir("config")
    _write(root, json.dumps({"device_id": "d", "door": {"unlock_ms": 3000}}))
    with open(root + "/config.json.tmp", "w") as f:
        f.write('{"device_id": "d", "door": {"unlo')  # the power went here
    assert config.load(root)["door"] == {"unlock_ms": 3000}
    config.write_changes(root, {"unlock_ms": 4000})  # the next command writes over the leftover
    assert _read(root)["door"] == {"unlock_ms": 4000}
