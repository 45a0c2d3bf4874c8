"""PC/SC access through pyscard: reader lookup, connection, and a `transceive` for card sessions."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Any

from host_tools.cards import pcsc_private
from host_tools.errors import EXIT_MISSING_TOOL, EXIT_NO_DEVICE, UserError

Transceive = Callable[[bytes], bytes]


def _pyscard() -> Any:
    try:
        import smartcard.System
    except ImportError:
        raise UserError("pyscard is not installed: pip install 'doorctl[cards]'", EXIT_MISSING_TOOL) from None
    return smartcard.System


def reader_names() -> list[str]:
    system = _pyscard()
    try:
        return [str(r) for r in system.readers()]
    except Exception:  # pcscd not running: pyscard raises its own EstablishContextException
        return []


def find_reader(name: str | None) -> Any:
    """The reader whose name contains `name` (the first reader when None)."""
    system = _pyscard()
    try:
        readers = system.readers()
    except Exception:
        readers = []
    if not readers:
        raise UserError("no PC/SC reader found: plug in a reader and check that pcscd is running",
                        EXIT_NO_DEVICE)
    if name is None:
        return readers[0]
    for r in readers:
        if name in str(r):
            return r
    raise UserError(f"no reader matching {name!r}: readers are {', '.join(str(r) for r in readers)}",
                    EXIT_NO_DEVICE)


def connect(reader_name: str | None) -> tuple[Any, Transceive]:
    """Connect to the card on a reader; returns (connection, transceive)."""
    from smartcard.Exceptions import CardConnectionException, NoCardException

    reader = find_reader(reader_name)
    conn = reader.createConnection()
    try:
        conn.connect()
    except (NoCardException, CardConnectionException):
        close(conn)
        raise UserError(f"no card on {reader}: place a card on the reader and retry",
                        EXIT_NO_DEVICE) from None
    return conn, transceive_for(conn)


def close(conn: Any) -> None:
    """Disconnect and release the PC/SC context now, not at garbage collection (when pcscd
    may be gone)."""
    for name in ("disconnect", "release"):
        try:
            getattr(conn, name)()
        except Exception:  # already disconnected, card gone, or pcscd stopped
            pass


def transceive_for(conn: Any) -> Transceive:
    def transceive(apdu: bytes) -> bytes:
        data, sw1, sw2 = conn.transmit(list(apdu))
        return bytes(data) + bytes([sw1, sw2])

    return transceive


def wait_for_card(reader_name: str, timeout: float = 10.0) -> tuple[Any, Transceive]:
    """Connect once pcscd has seen the card arrive (pcscd polls its readers)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return connect(reader_name)
        except UserError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def card_present(reader_name: str) -> bool:
    """Whether pcscd currently sees a card on the reader. Asks pcscd for the reader state
    (SCardGetStatusChange) without connecting, so the card is never powered up by the question."""
    from smartcard import scard

    full = str(find_reader(reader_name))
    hresult, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hresult != scard.SCARD_S_SUCCESS:
        return False
    try:
        hresult, states = scard.SCardGetStatusChange(ctx, 0, [(full, scard.SCARD_STATE_UNAWARE)])
        if hresult != scard.SCARD_S_SUCCESS:
            return False
        return bool(states[0][1] & scard.SCARD_STATE_PRESENT)
    finally:
        scard.SCardReleaseContext(ctx)


def wait_until_absent(reader_name: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while card_present(reader_name):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def wait_for_reader(name: str, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(name in r for r in reader_names()):
            return True
        time.sleep(0.1)
    return False


def start_pcscd() -> subprocess.Popen[bytes] | None:
    """Start `pcscd -f` when no reader service answers; returns the process we started.

    In a run isolated by `pcsc_private.isolate` (the test suite, `doorctl bench`), that is
    the run's private pcscd, never the system one."""
    if reader_names():
        return None
    if pcsc_private.isolated():
        return pcsc_private.start()
    exe = shutil.which("pcscd") or "/usr/sbin/pcscd"
    proc = subprocess.Popen([exe, "-f"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc
