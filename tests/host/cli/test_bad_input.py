"""Every doorctl command, driven with bad arguments, answers with one line on stderr, no
traceback and a non-zero exit code (the table in docs/installer-guide.md). The command tree
is walked, so a new command without its cases here fails `test_every_command_has_cases`."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from host_tools.cli import command, run
from reference_platform.store import Store

TMP = "{tmp}"  # replaced by the test's directory


def leaves(cmd: object, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], object]]:
    subs = getattr(cmd, "commands", None)
    if subs:
        for name, sub in subs.items():
            yield from leaves(sub, (*path, name))
    else:
        yield path, cmd


KEYS = f"{TMP}/site.json"
DB = f"{TMP}/p.db"
MISSING = f"{TMP}/missing"
# Per command: argument lists that are wrong (besides the generic ones every command gets).
CASES: dict[str, list[list[str]]] = {
    "build unix32": [["--manifest", MISSING]],
    "build mcu": [],  # no values: the generic cases
    "mcu check-bench": [["--table", MISSING]],
    "mcu run": [[MISSING], [MISSING, "--heap", "bogus"]],
    "bench": [["nosuch-figure"], ["--update", "/proc/x/BENCH.md"]],
    "commission": [["-p", "/dev/ttyUSB77", "--keys", KEYS, "--device-id", "a.b", "--door-no", "0",
                    "--broker", "127.0.0.1:1883"],
                   ["-p", "/dev/ttyUSB77", "--keys", MISSING, "--device-id", "a.b", "--door-no", "0",
                    "--broker", "127.0.0.1:1883"],
                   ["-p", "/dev/ttyUSB77", "--keys", KEYS, "--device-id", "a.b", "--door-no", "0",
                    "--broker", "mqtt://host"],  # no port: taken as 1883, then the port is missing
                   ["-p", "/dev/ttyUSB77", "--keys", KEYS, "--device-id", "a.b", "--door-no", "0",
                    "--broker", "mqtts://host:8883"],
                   ["-p", "/dev/ttyUSB77", "--keys", KEYS, "--device-id", "a.b", "--door-no", "-1",
                    "--broker", "h:1"]],
    "demo": [["--state", "/proc/x"], ["--pace", "-1"]],
    "deploy": [["-p", "/dev/ttyUSB77"], ["-p", MISSING]],
    "monitor": [["--door", "bad id!"], ["--door", "a.b", "--broker", "nohost"],
                ["--door", "a.b", "--broker", "127.0.0.1:1"], ["--door", "a.b", "--seconds", "-1"],
                ["--door", "a.b", "--tls-ca", MISSING]],
    "flash": [["-p", "/dev/ttyUSB77", "--firmware", MISSING],
              ["-p", "/dev/ttyUSB77", "--firmware", KEYS]],
    "selftest": [["-p", "/dev/ttyUSB77"], ["-p", "/dev/ttyUSB77", "--relay", "bogus"]],
    "logs": [["-p", "/dev/ttyUSB77"]],
    "cache build": [[MISSING, "-k", KEYS, "-o", f"{TMP}/w.bin", "--version", "1", "--site", "1001"],
                    [f"{TMP}/cards.csv", "-k", KEYS, "-o", f"{TMP}/w.bin", "--version", "-1",
                     "--site", "1001"],
                    [f"{TMP}/cards.csv", "-k", KEYS, "-o", f"{TMP}/w.bin", "--version", "1",
                     "--site", "-1"],
                    [f"{TMP}/cards.csv", "-k", f"{TMP}/binary", "-o", f"{TMP}/w.bin", "--version", "1",
                     "--site", "1001"],
                    [f"{TMP}/cards.csv", "-k", KEYS, "-o", "/proc/x/w.bin", "--version", "1",
                     "--site", "1001"]],
    "cache delta": [[MISSING, MISSING, "-k", KEYS, "-o", f"{TMP}/d.bin"]],
    "cache inspect": [[MISSING], [f"{TMP}/binary"], [KEYS]],
    "card personalize": [["--keys", MISSING], ["--keys", KEYS, "--identity", "zz"]],
    "card read": [["--keys", MISSING], ["--keys", f"{TMP}/binary"]],
    "card virtual": [["--slot", "5"], ["--kind", "bogus"], ["--kind", "clone"]],
    "card keys init": [["--out", "/proc/x/site.json", "--site-id", "1"], ["--out", f"{TMP}/n.json",
                                                                           "--site-id", "-1"],
                       ["--out", KEYS, "--site-id", "1"]],
    "card keys rotate": [["--keys", MISSING], ["--keys", f"{TMP}/binary"]],
    "card keys per-door": [["--keys", MISSING], ["--keys", KEYS]],  # KEYS: per-door already
    "card keys close": [["--keys", MISSING], ["--keys", KEYS],  # no rotation to close
                        ["--keys", KEYS, "--db", f"{TMP}/typo.db"]],
    "card keys revoke-door": [["a.b", "--keys", MISSING], ["bad id!", "--keys", KEYS],
                              ["a.b", "--keys", f"{TMP}/binary"]],
    "card rekey": [["--keys", MISSING]],
    "card keys door": [["--keys", MISSING, "--out", f"{TMP}/d.json"],
                       ["--keys", KEYS, "--out", f"{TMP}/d.json"],  # per-door site: no --device-id
                       ["--keys", KEYS, "--device-id", "bad id!", "--out", f"{TMP}/d.json"]],
    "platform run": [["--broker", "nohost"], ["--broker", "127.0.0.1:1", "--broker-wait", "1"],
                     ["--tls-ca", MISSING],
                     ["--broker", "http://h:1"], ["--broker", "127.0.0.1:1", "--broker-wait", "nan"]],
    "torture": [["--minutes", "0"], ["--minutes", "-3"], ["--seed", "x"], ["--work", TMP],
                ["--work", "/proc/x/t"], ["--work", KEYS]],
    "platform events": [["nosuch", "--db", DB], ["nosuch", "--db", f"{TMP}/typo.db"]],
    "platform command": [["a.b", "open", "--keys", MISSING], ["a.b", "fly", "--keys", KEYS],
                         ["bad id!", "open", "--keys", KEYS], ["a.b", "open", "--keys", KEYS, "--arg", "x"],
                         ["a.b", "open", "--keys", KEYS, "--broker", "127.0.0.1:1"]],
    "platform sync": [["--keys", KEYS, "--db", f"{TMP}/typo.db"], ["--keys", MISSING, "--db", DB],
                      ["--keys", KEYS, "--db", DB, "--broker", "127.0.0.1:1"]],
    "platform alarms": [["--door", "nosuch", "--db", DB], ["--db", f"{TMP}/typo.db"]],
    "platform doors": [["--db", f"{TMP}/typo.db"], ["--db", DB, "--keys", MISSING], ["--db", "/proc"]],
    "platform keys": [["--keys", MISSING, "--db", DB], ["--keys", KEYS, "--db", f"{TMP}/typo.db"],
                      ["--keys", f"{TMP}/binary", "--db", DB]],
    "platform residence-report": [["--card", "5101013aeef2e95e", "--from", "2026-01-01", "--to", "2026-12-31",
                                   "--db", DB],
                                  ["--card", "zz", "--from", "2026-01-01", "--to", "2026-12-31", "--db", DB],
                                  ["--card", "5101013aeef2e95e", "--from", "2026-12-31", "--to", "2026-01-01",
                                   "--db", DB]],
    "platform broker-acl": [["--out", "/proc/x", "--platform", "@ingest"],
                            ["--out", f"{TMP}/acl", "--platform", "bad name!"]],
    "platform broker-user": [[f"{TMP}/passwd", "bad id!", "--password-file", MISSING],
                             [f"{TMP}/passwd", "a.b", "--password-file", MISSING],
                             ["/proc/x/passwd", "a.b", "--password-file", KEYS]],
    "platform retire": [["nosuch", "--db", DB], ["a.b.c", "--db", f"{TMP}/typo.db"]],
    "platform card issue": [["zz", "--resident", "r", "--room", "1", "--doors", "0", "--from", "2026-01-01",
                             "--to", "2026-12-31", "--keys", KEYS, "--db", DB],
                            ["5101013aeef2e95e", "--resident", "r", "--room", "1", "--doors", "x",
                             "--from", "2026-01-01", "--to", "2026-12-31", "--keys", KEYS, "--db", DB],
                            ["5101013aeef2e95e", "--resident", "r", "--room", "1", "--doors", "0",
                             "--from", "2026-12-31", "--to", "2026-01-01", "--keys", KEYS, "--db", DB]],
    "platform card renew": [["5101013aeef2e95e", "--to", "someday", "--keys", KEYS, "--db", DB],
                            ["5101013aeef2e95e", "--to", "2027-01-01", "--keys", KEYS, "--db", DB]],
    "platform card reissue": [["5101013aeef2e95e", "zz", "--keys", KEYS, "--db", DB]],
    "platform card list": [["--keys", KEYS, "--db", f"{TMP}/typo.db"]],
    "reader emulate": [[], ["--reader-addr", "nohost"], ["--device-state", MISSING],
                       ["--reader-addr", "127.0.0.1:1"]],
    "virtual address": [["bogus", "--state", TMP], ["--state", MISSING, "--timeout", "0.5"],
                        ["--state", TMP, "--timeout", "0.5"], ["--state", TMP, "--timeout", "nan"]],
    "virtual run": [["--state", "/proc/x"], ["--state", f"{TMP}/v", "--io-port", "70000"]],
}
for _op in ("lost", "unblock", "suspend", "resume", "cancel"):
    CASES[f"platform card {_op}"] = [["5101013aeef2e95e", "--keys", KEYS, "--db", DB],
                                     ["5101013aeef2e95e", "--keys", KEYS, "--db", f"{TMP}/typo.db"],
                                     ["zz", "--keys", KEYS, "--db", DB]]


def generic(cmd: object) -> list[list[str]]:
    out = [["--no-such-option"]]
    params = getattr(cmd, "params", [])
    if any(p.required for p in params):
        out.append([])
    for p in params:
        ann = getattr(getattr(p, "type_descriptor", None), "annotation", None)
        if p.opts and p.opts[0].startswith("--") and ann in (int, float):
            out.append([p.opts[0], "abc"])
        if p.opts and p.opts[0].startswith("--") and ann is float:
            out.append([p.opts[0], "nan"])  # passes every `x < 0` check: a wait without end
    return out


def test_every_command_has_cases() -> None:
    names = {" ".join(path) for path, _ in leaves(command())}
    assert names - set(CASES) == set(), "add bad-argument cases for the new commands"


class Hang(Exception):
    pass


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang


@pytest.fixture()
def world(tmp_path: Path) -> Path:
    from host_tools.cards import sitekeys

    sitekeys.write_secret(tmp_path / "site.json", sitekeys.new_site_keys(1001))
    (tmp_path / "binary").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "cards.csv").write_text("ref\n5101013aeef2e95e\n")
    store = Store(str(tmp_path / "p.db"))
    store.store_events("a.b.c", [(1, 40, 1, 0, 0, 0, 1, "")])
    store.close()
    return tmp_path


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_arguments_give_one_line_and_a_failing_exit_code(
        name: str, world: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(world)
    cmd = dict((" ".join(p), c) for p, c in leaves(command()))[name]
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        for args in CASES[name] + generic(cmd):
            argv = [*name.split(), *(a.replace(TMP, str(world)) for a in args)]
            signal.alarm(30)
            try:
                code = run(argv)
            except Hang:
                pytest.fail(f"doorctl {' '.join(argv)}: no answer within 30 s")
            finally:
                signal.alarm(0)
            got = capsys.readouterr()
            lines = got.err.strip().splitlines()
            assert code != 0, f"doorctl {' '.join(argv)}: exit 0\n{got.out}{got.err}"
            assert "Traceback" not in got.err + got.out, f"doorctl {' '.join(argv)}:\n{got.err}"
            assert len(lines) == 1 and lines[0].startswith("error: "), f"doorctl {' '.join(argv)}:\n{got.err}"
            assert "unexpected" not in lines[0], f"doorctl {' '.join(argv)}: {lines[0]}"
    finally:
        signal.signal(signal.SIGALRM, old)
    assert not (world / "typo.db").exists()


@pytest.mark.parametrize("name", sorted(CASES))
def test_help_shows_no_typer_artefacts(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run([*name.split(), "--help"]) == 0
    text = capsys.readouterr().out
    assert "<bool>" not in text and "{" not in text.split("Usage:", 1)[1].splitlines()[0], text


def test_every_command_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/installer-guide.md says so."""
    missing = [" ".join(p) for p, c in leaves(command()) if "Example" not in (getattr(c, "help", "") or "")]
    assert missing == []
