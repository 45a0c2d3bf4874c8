"""Each test run has its own pcscd and vpcd ports (host_tools/cards/pcsc_private.py): another
run on the same machine putting cards on and off its "Virtual PCD 00 00" never resets a card
this run is talking to (with one system pcscd and vpcd's fixed ports, it did: "Card was
reset")."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from host_tools.cards import pcsc, pcsc_private, vcard
from host_tools.paths import REPO_ROOT

READER = "Virtual PCD 00 00"
GET_VERSION = bytes.fromhex("9060000000")
ABORT = bytes.fromhex("90AF000000")

pytestmark = pytest.mark.skipif(not pcsc_private.can_isolate(),
                                reason="no mount namespace here: the system pcscd is shared")

OTHER_RUN = textwrap.dedent('''
    import pathlib, sys, tempfile
    from host_tools.cards import pcsc, pcsc_private, vcard
    folder = tempfile.TemporaryDirectory()
    assert pcsc_private.isolate(pathlib.Path(folder.name))
    proc = pcsc.start_pcscd()
    try:
        assert pcsc.wait_for_reader(sys.argv[1])
        print("port", vcard.vpcd_port(), flush=True)
        for _ in range(4):  # a card on, an APDU, the card off
            with vcard.VpcdClient(vcard.VirtualDesfire()):
                conn, transceive = pcsc.wait_for_card(sys.argv[1])
                transceive(bytes.fromhex("9060000000"))
                pcsc.close(conn)
            pcsc.wait_until_absent(sys.argv[1])
        print("done", flush=True)
    finally:
        proc.terminate()
        proc.wait(10)
        folder.cleanup()
''')


@pytest.fixture(scope="module")
def own_pcscd() -> Iterator[None]:
    proc = pcsc.start_pcscd()
    try:
        if not pcsc.wait_for_reader(READER):
            pytest.fail("the run's pcscd shows no Virtual PCD reader")
        yield
    finally:
        gc.collect()  # pyscard releases its contexts in __del__: before pcscd stops
        if proc is not None:
            proc.terminate()
            proc.wait(10)


def test_the_run_has_its_own_socket_and_ports(own_pcscd: None) -> None:
    assert pcsc_private.isolated()
    assert os.environ["PCSCLITE_CSOCK_NAME"].startswith(os.environ[pcsc_private.DIR_ENV])
    assert vcard.vpcd_port() != vcard.VPCD_PORT
    assert vcard.vpcd_port(1) == vcard.vpcd_port() + 1


def test_another_run_putting_cards_on_its_reader_does_not_reset_ours(own_pcscd: None) -> None:
    with vcard.VpcdClient(vcard.VirtualDesfire()):
        conn, transceive = pcsc.wait_for_card(READER)
        try:
            other = subprocess.Popen([sys.executable, "-c", OTHER_RUN, READER], cwd=REPO_ROOT,
                                     env={k: v for k, v in os.environ.items()
                                          if k not in (pcsc_private.DIR_ENV,
                                                       pcsc_private.PORT_ENV,
                                                       pcsc_private.SOCKET_ENV)},
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            exchanges = 0
            while other.poll() is None:  # our card answers all along
                assert transceive(GET_VERSION)[-2:] == b"\x91\xaf"
                assert transceive(ABORT)
                exchanges += 1
                time.sleep(0.02)
            out, err = other.communicate()
            assert other.returncode == 0, out + err
            assert "done" in out and f"port {vcard.vpcd_port()}\n" not in out
            assert exchanges > 0
            assert transceive(GET_VERSION)[-2:] == b"\x91\xaf"
        finally:
            pcsc.close(conn)


def test_a_test_worker_gets_its_own_pcscd_not_the_one_it_inherited(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under pytest-xdist each worker starts from the controller's environment, which points at
    the controller's private pcscd: two workers on it reset each other's cards."""
    inherited = os.environ[pcsc_private.DIR_ENV], os.environ[pcsc_private.PORT_ENV]
    for name in (pcsc_private.DIR_ENV, pcsc_private.PORT_ENV, pcsc_private.SOCKET_ENV,
                 pcsc_private.OWNER_ENV):
        monkeypatch.setenv(name, os.environ.get(name, ""))  # restored after the test
    monkeypatch.setenv(pcsc_private.OWNER_ENV, "controller")
    folder = pcsc_private.isolate_in_temp("gw7")
    try:
        assert folder is not None, "the worker kept the pcscd it inherited"
        own = os.environ[pcsc_private.DIR_ENV], os.environ[pcsc_private.PORT_ENV]
        assert own[0] == folder.name and own[0] != inherited[0]
        assert os.environ[pcsc_private.SOCKET_ENV].startswith(folder.name)
        assert pcsc_private.isolate_in_temp("gw7") is None  # the worker's second conftest
        assert (os.environ[pcsc_private.DIR_ENV], os.environ[pcsc_private.PORT_ENV]) == own
        assert pcsc_private.isolate_in_temp() is None  # a nested run keeps the worker's
    finally:
        folder and folder.cleanup()
