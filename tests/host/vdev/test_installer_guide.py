"""docs/installer-guide.md is executable: its `sh` blocks run as written, in order, in one
bash shell, on a virtual door with real mosquitto, pcscd/vpcd, mpremote and openssl. Lines
`$ ...` (continued by `> ...`) are commands; the lines after one are its output, and an
output starting `error:` means the guide expects that command to fail. The guide's own
variables (`NAME=value  # guide variable`) are set to free ports here. A command whose exit
code differs from the guide's fails the test, naming the command, so the guide and the
program cannot drift apart."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from host_tools.cards import pcsc_private
from host_tools.services import free_port

GUIDE = Path(__file__).resolve().parents[3] / "docs" / "installer-guide.md"
VARIABLE = re.compile(r"^(\w+)=(\"[^\"]*\"|\S+)\s+# guide variable")
BACKGROUND = re.compile(r"&\s*(\w+=\$!)?\s*$")


@dataclass
class Step:
    command: str
    output: list[str] = field(default_factory=list)

    @property
    def background(self) -> bool:
        return bool(BACKGROUND.search(self.command)) and not self.command.rstrip().endswith("&&")

    @property
    def expect_failure(self) -> bool:
        return bool(self.output) and self.output[0].startswith("error:")


def steps(text: str) -> list[Step]:
    """The commands of the guide's `sh` blocks, in order, with the output shown for each."""
    out: list[Step] = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, re.S | re.M):
        current: Step | None = None
        for line in block.splitlines():
            if line.startswith("$ "):
                current = Step(line[2:])
                out.append(current)
            elif line.startswith("> ") and current is not None and not current.output:
                current.command += "\n" + line[2:]
            elif current is not None:
                current.output.append(line)
    return out


def script(all_steps: list[Step], values: dict[str, str]) -> str:
    lines = ["set -u", "trap 'kill $(jobs -p) 2> /dev/null; wait' EXIT"]
    for i, step in enumerate(all_steps):
        command = step.command
        m = VARIABLE.match(command)
        if m and m.group(1) in values:
            command = f"{m.group(1)}={values[m.group(1)]}"
        lines += [f"echo '@@STEP {i}'", command, "rc=$?", f"echo \"@@RC {i} $rc\""]
        if not step.background:
            check = "-ne" if step.expect_failure else "-eq"
            lines.append(f"[ $rc {check} 0 ] || exit 90")
    lines.append("echo '@@DONE'")
    return "\n".join(lines) + "\n"


def test_the_guide_has_steps_and_marked_variables() -> None:
    found = steps(GUIDE.read_text())
    names = {m.group(1) for s in found if (m := VARIABLE.match(s.command))}
    assert names == {"BROKER_PORT", "TLS_PORT", "READER"}
    assert sum(s.expect_failure for s in found) >= 4  # the mistakes the guide shows
    assert any(s.command.startswith("doorctl selftest") for s in found)


# The guide runs in its own network, mount and process namespaces: its loopback ports, its
# pcscd (with vpcd's fixed ports) and its /run/pcscd are its own, so other runs on this machine
# neither disturb it nor see it; everything it started ends with the namespace.
ISOLATED = ["unshare", "-mnp", "--fork", "--mount-proc", "sh", "-c",
            'ip link set lo up && mkdir -p /run/pcscd && d=$(mktemp -d) && mount --bind "$d" /run/pcscd '
            '&& exec bash "$1"', "sh"]


def can_isolate() -> bool:
    try:
        return subprocess.run([*ISOLATED[:4], "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture()
def workdir() -> Iterator[Path]:
    """A directory mosquitto (which drops to its own user) can reach, as a user's home is."""
    path = Path(tempfile.mkdtemp(prefix="guide-"))
    path.chmod(0o755)
    yield path
    if os.environ.get("GUIDE_KEEP"):  # to read what the guide's commands printed (guide.log)
        print(f"kept {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.timeout(1200)
@pytest.mark.skipif(not shutil.which("jq") or not shutil.which("openssl") or not shutil.which("ip")
                    or not can_isolate(), reason="needs jq, openssl, ip and namespaces (unshare)")
def test_the_installer_guide_runs_as_written(workdir: Path) -> None:
    tmp_path = workdir
    all_steps = steps(GUIDE.read_text())
    body = script(all_steps, {"BROKER_PORT": str(free_port()), "TLS_PORT": str(free_port())})
    (tmp_path / "guide.sh").write_text(body)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    for name in (pcsc_private.DIR_ENV, pcsc_private.PORT_ENV, pcsc_private.SOCKET_ENV):
        env.pop(name, None)  # the guide's pcscd is its own, in its namespaces, as on a site
    log = tmp_path / "guide.log"
    with log.open("w") as f:
        proc = subprocess.Popen([*ISOLATED, str(tmp_path / "guide.sh")], cwd=tmp_path, env=env,
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=1000)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGTERM)  # anything the guide left running
            except ProcessLookupError:
                pass
    out = log.read_text(errors="replace")
    rcs = dict(re.findall(r"^@@RC (\d+) (\d+)$", out, re.M))
    if "@@DONE" not in out:
        last = max((int(i) for i in rcs), default=-1)
        failed = all_steps[last] if last >= 0 else None
        tail = out[out.find(f"@@STEP {last}"):] if last >= 0 else out
        # What the step wrote to a file (a `--json > report` step prints nothing itself).
        for name in re.findall(r">\s*(\S+)", failed.command if failed else ""):
            written = tmp_path / name
            if written.is_file():
                tail += f"\n--- {name}:\n{written.read_text(errors='replace')[-2000:]}"
        pytest.fail(f"the guide's step `{failed.command if failed else '?'}` exited {rcs.get(str(last))}, "
                    f"the guide shows {'a failure' if failed and failed.expect_failure else 'success'}:"
                    f"\n{tail[-5000:]}")
    # What the guide says happened, happened:
    report = json.loads((tmp_path / "reports" / "commissioning-demo.b1.d1.json").read_text())
    assert report["items"], report
    tls = {i["item"]: i for i in json.loads((tmp_path / "reports" / "tls.json").read_text())["items"]}
    assert tls["broker"]["result"] == "pass" and "TLS" in tls["broker"]["detail"], tls
    monitor = (tmp_path / "monitor.txt").read_text()
    assert "access_granted (card)" in monitor and "access_denied (auth_failed)" in monitor, \
        f"{monitor}\n--- the guide's output, last part:\n{out[-4000:]}"
