"""mosquitto (Debian's package) on a loopback port of its own, private to its caller: started
and stopped by the tests, the demo, the benchmarks and the HIL rig, with its configuration, TLS
files and password/ACL files in a temporary directory.

    with Mosquitto() as broker:               # 127.0.0.1:broker.port
        broker.restart()                      # a broker restart on the same port (it keeps nothing)
        broker.kill(); broker.pause(True)     # a crash; a hung broker whose sockets stay open
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from host_tools.services._proc import ServiceError, free_port

__all__ = ["BrokerAuth", "BrokerError", "Mosquitto", "TLSListener", "free_port"]


class BrokerError(ServiceError):
    """mosquitto is missing or did not start."""


def _mosquitto() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and Path(candidate).exists():
            return candidate
    raise BrokerError("mosquitto not found: run ./dev setup (apt package mosquitto)")


@dataclass
class TLSListener:
    """The broker's TLS settings: its CA (to check client certificates), its certificate and
    key (PEM files); `require_certificate`: clients must present a certificate of that CA."""

    cafile: Path
    certfile: Path
    keyfile: Path
    require_certificate: bool = False


@dataclass
class BrokerAuth:
    """Access control (reference_platform/broker_acl.py): user name -> password for every
    client (doors: their device id; platform users `@...`, observers `%...`)."""

    passwords: dict[str, str]

    def platform_users(self) -> list[str]:
        return sorted(u for u in self.passwords if u.startswith("@"))

    def observer_users(self) -> list[str]:
        return sorted(u for u in self.passwords if u.startswith("%"))


class Mosquitto:
    """mosquitto on 127.0.0.1:`port`; `restart()` keeps the port (a broker restart).

    With `tls`, the one listener speaks TLS only (a plain MQTT client is refused at the
    handshake); set `self.tls` to other files and `restart()` to change the certificate.
    `plain_port`: a second listener, plain TCP, beside the TLS one (clients of both see the
    same topics: a benchmark puts one platform on each).
    """

    def __init__(self, port: int | None = None, tls: TLSListener | None = None,
                 auth: BrokerAuth | None = None, plain_port: int | None = None) -> None:
        self.port = port or free_port()
        self.plain_port = plain_port
        self.host = "127.0.0.1"
        self.tls = tls
        self.auth = auth
        self._dir = Path(tempfile.mkdtemp(prefix="mosquitto-"))
        self._proc: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        text = (f"listener {self.port} 127.0.0.1\npersistence false\n"
                "max_inflight_messages 100\nmax_queued_messages 100000\n")
        if self.auth is None:
            text += "allow_anonymous true\n"
        else:
            from reference_platform import broker_acl

            pw, acl = self._dir / "auth" / "passwd", self._dir / "auth" / "acl"
            pw.parent.mkdir(exist_ok=True)
            pw.unlink(missing_ok=True)
            for user, password in self.auth.passwords.items():
                broker_acl.set_password(pw, user, password)
            acl.write_text(broker_acl.acl_text(self.auth.platform_users(),
                                               self.auth.observer_users()))
            for f in (pw, acl):
                self._own(f)
            text += broker_acl.conf_lines(pw, acl)
        if self.tls is not None:
            t = self.tls
            files = [self._tls_file(name, Path(p)) for name, p in
                     (("ca.pem", t.cafile), ("server.crt", t.certfile), ("server.key", t.keyfile))]
            text += (f"cafile {files[0]}\ncertfile {files[1]}\nkeyfile {files[2]}\n"
                     f"require_certificate {'true' if t.require_certificate else 'false'}\n")
        if self.plain_port is not None:  # after the TLS lines: those belong to the first listener
            text += f"listener {self.plain_port} 127.0.0.1\n"
        return text

    def _tls_file(self, name: str, src: Path) -> Path:
        """A copy of a TLS file the broker can read: started as root, mosquitto drops to its
        own user before it loads them, so the copies (and their folder) become that user's."""
        dst = self._dir / "tls" / name
        dst.parent.mkdir(exist_ok=True)
        shutil.copyfile(src, dst)
        dst.chmod(0o600)
        return self._own(dst)

    def _own(self, dst: Path) -> Path:
        """Make a file (and its folders) the mosquitto user's, when started as root."""
        if os.geteuid() == 0:
            import pwd

            try:
                user = pwd.getpwnam("mosquitto")
            except KeyError:
                return dst
            for path in (self._dir, dst.parent, dst):
                os.chown(path, user.pw_uid, user.pw_gid)
        return dst

    def start(self, timeout_s: float = 10.0) -> Mosquitto:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.2):
                pass
        except OSError:
            pass
        else:  # someone else's broker would answer in place of this one
            raise BrokerError(f"port {self.port} on {self.host} is already in use")
        conf = self._dir / "mosquitto.conf"
        conf.write_text(self.config())
        self._proc = subprocess.Popen(
            [_mosquitto(), "-c", str(conf)],
            stdout=subprocess.DEVNULL, stderr=open(self._dir / "log", "wb"),
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerError(f"mosquitto exited: {(self._dir / 'log').read_text()[-500:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not listen on port {self.port}")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def pid(self) -> int | None:
        """The running broker's process id (the scale benchmark reads its CPU time)."""
        return self._proc.pid if self._proc is not None else None

    def kill(self) -> None:
        """SIGKILL: the broker dies as in a crash, with whatever it held in memory."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def pause(self, stopped: bool) -> None:
        """SIGSTOP (True) or SIGCONT (False): a broker that hangs, its sockets still open."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP if stopped else signal.SIGCONT)

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)
