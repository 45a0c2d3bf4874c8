"""The field timing model (PN532 HSU wire, ISO 14443 air, DESFire EV2 card) against values worked
out by hand, and the emulator's paced link: it never delivers faster than the model allows.
Only lower bounds are asserted: the pacing guarantees them whatever the machine's load."""

from __future__ import annotations

import socket
import time

import pytest

from card_reader import pn532 as p
from host_tools import field_timing as ft
from host_tools.cards import vcard
from host_tools.pn532_emu import LocalCard, PN532Emulator, SocketStream
from host_tools.pn532_sync import PN532

FC = 13.56e6
BYTE_115200 = 10 / 115200  # 86.806 µs


def test_hsu_byte_and_frame_wire_time() -> None:
    assert ft.uart_byte_s() == pytest.approx(86.806e-6, rel=1e-4)
    assert ft.uart_byte_s(9600) == pytest.approx(1.0417e-3, rel=1e-4)
    # GetFirmwareVersion: 00 00 FF 02 FE D4 02 2A 00, nine bytes = 781.25 µs
    frame = p.encode_frame(p.TFI_HOST, bytes([p.CMD_GET_FIRMWARE_VERSION]))
    assert len(frame) == 9
    assert ft.wire_s(len(frame)) == pytest.approx(781.25e-6, rel=1e-6)
    assert ft.wire_s(len(p.ACK)) == pytest.approx(520.83e-6, rel=1e-4)


def test_air_bit_fdt_and_short_frame() -> None:
    assert ft.ETU_S == pytest.approx(9.4395e-6, rel=1e-4)
    assert ft.FDT_S == pytest.approx(86.43e-6, rel=1e-3)
    assert ft.short_frame_s() == pytest.approx(9 * 128 / FC)


def test_iblock_air_time() -> None:
    # ISO-wrapped SelectApplication 90 5A 00 00 03 AID(3) 00: 9 bytes of INF
    # PCB + 9 + CRC = 12 bytes: SOF + 12 * 9 + EOF = 110 etu = 14,080 / fc = 1.0383 ms
    assert ft.iblock_air_s(9) == pytest.approx(14080 / FC)
    assert ft.iblock_air_s(9) == pytest.approx(1.0383e-3, rel=1e-4)


def test_chained_blocks_add_an_ack_and_two_fdt() -> None:
    # 100 bytes at FSC 64: 61 + 39 bytes of INF; 578 + 380 etu, R(ACK) 29 etu, two FDTs
    assert ft.blocks(100) == 2 and ft.blocks(61) == 1 and ft.blocks(0) == 1
    want = (987 * 128 + 2 * 1172) / FC
    assert ft.iso_dep_send_s(100) == pytest.approx(want)


def test_activation_of_a_7_byte_uid_card_with_rats() -> None:
    # REQA 9 + ATQA 20; two cascade levels of 20 + 47 + 83 + 29; RATS 38 + ATS 74 = 499 etu;
    # six FDTs; SFGT for SFGI 1 = 2 * 4096 / fc: 79,096 / fc = 5.833 ms
    assert ft.activation_s(7, ft.DESFIRE_ATS) == pytest.approx(79096 / FC)
    assert ft.activation_s(7, ft.DESFIRE_ATS) == pytest.approx(5.833e-3, rel=1e-3)
    # a 4-byte UID, no RATS: one level, 9 + 20 + 179 etu and three FDTs
    assert ft.activation_s(4, None) == pytest.approx((208 * 128 + 3 * 1172) / FC)


# A Proxmark3 sniff of a reader reading a MIFARE DESFire (ATS 06 75 77 81 02 80), every frame
# timed in carrier periods: RfidResearchGroup/proxmark3 traces/hf_mfdes_sniff.trace (commit
# a79b23edc408). (frame bytes incl. CRC, first bytes, start-of-frame to last modulation in 1/fc)
SNIFFED_FRAMES = [
    (2, "4403", 2368), (5, "88046f16f5", 5824), (9, "9370", 10464), (3, "24d836", 3520),
    (4, "e0803173", 4768), (8, "06757781", 9280), (16, "0a0000a4", 18528),
    (13, "0b00905a", 15072), (14, "0a000675", 16256), (26, "0b0090af", 30048),
    (21, "0a000001", 24256), (19, "0b003031", 21952),
]
# (command, end of the reader's frame, start of the card's answer), in 1/fc
SNIFFED_GAPS = {0x5A: (18773939, 18784407), 0x1A: (18944403, 18977847),
                0xAF: (19234611, 19262103), 0xF5: (19464899, 19478695),
                0xBD: (19706019, 19720519)}


def test_air_model_against_a_sniffed_desfire() -> None:
    """Every sniffed frame is within 1.5 etu of the model, the model the longer (the sniffer
    stops at the last modulation; the model counts the whole EOF)."""
    for nbytes, _, measured in SNIFFED_FRAMES:
        model = ft.air_frame_s(nbytes) * FC
        assert 0 <= model - measured <= 1.5 * 128 + 1e-6, (nbytes, model, measured)


def test_card_latencies_are_sourced_or_above_the_sniffed_ones() -> None:
    """SelectApplication is the sniffed card's time (rounded up); the UNSOURCED AES commands are
    above their sniffed 2K3DES or plain counterparts, and every command is within FWT."""
    def took(cmd: int) -> float:
        end, answer = SNIFFED_GAPS[cmd]
        return (answer - end) / FC - ft.FDT_S

    assert took(0x5A) <= ft.CARD_PROCESSING_S[0x5A] <= took(0x5A) + 0.2e-3
    assert ft.CARD_PROCESSING_S[0x71] >= took(0x1A)  # AuthenticateISO part 1
    assert ft.CARD_PROCESSING_S[0xAF] >= took(0xAF)  # its part 2
    assert ft.CARD_PROCESSING_S[0x64] >= took(0xF5)  # GetFileSettings, plain
    assert ft.CARD_PROCESSING_S[0xAD] >= took(0xBD)  # ReadData, enciphered
    assert ft.FWT_S == pytest.approx(77.3e-3, rel=1e-3)
    assert max(ft.CARD_PROCESSING_S.values()) < ft.FWT_S


def test_card_processing_by_command() -> None:
    assert ft.card_processing_s(bytes.fromhex("9071000002000000")) == ft.CARD_PROCESSING_S[0x71]
    assert ft.card_processing_s(bytes.fromhex("5A01D0F5")) == ft.CARD_PROCESSING_S[0x5A]
    assert ft.card_processing_s(bytes.fromhex("9099000000")) == ft.CARD_DEFAULT_S
    apdu = bytes.fromhex("905A00000301D0F500")
    want = ft.iblock_air_s(9) + ft.FDT_S + ft.CARD_PROCESSING_S[0x5A] + ft.iblock_air_s(2)
    assert ft.exchange_air_s(apdu, 2) == pytest.approx(want)


def test_switches_turn_parts_off() -> None:
    assert ft.FieldTiming(link=False).byte_s() == 0.0
    assert ft.FieldTiming(card=False).exchange_s(b"\x90\x5a\x00\x00\x00", 2) == 0.0
    assert ft.FieldTiming(baud=9600).byte_s() == pytest.approx(10 / 9600)


def _receive(sock: socket.socket, n: int, sent_at: float) -> list[tuple[float, int]]:
    """(seconds after `sent_at`, bytes received so far) after each chunk, until n bytes."""
    got: list[tuple[float, int]] = []
    total = 0
    sock.settimeout(10)
    while total < n:
        chunk = sock.recv(4096)
        assert chunk, "the emulator closed the link"
        total += len(chunk)
        got.append((time.monotonic() - sent_at, total))
    return got


def test_paced_link_is_never_faster_than_115200_baud() -> None:
    a, b = socket.socketpair()
    emu = PN532Emulator(field_timing=ft.FieldTiming(card=False))
    link = emu.serve(b)
    try:
        # Diagnose, communication line test: 200 bytes echoed back
        payload = bytes(range(200))
        cmd = p.encode_frame(p.TFI_HOST, bytes([0x00, 0x00]) + payload)
        answer = p.encode_frame(p.TFI_PN532, bytes([0x01, 0x00]) + payload)
        t0 = time.monotonic()
        a.sendall(cmd)
        chunks = _receive(a, len(p.ACK) + len(answer), t0)
        # every byte back arrives no sooner than the command's wire time plus its own position
        for elapsed, total in chunks:
            assert elapsed >= (len(cmd) + total) * BYTE_115200 * 0.999
        assert chunks[-1][0] >= (len(cmd) + len(p.ACK) + len(answer)) * BYTE_115200 * 0.999
        assert len(chunks) > 1  # bytes trickle in, not one block
    finally:
        link.close()
        a.close()


def test_card_answers_after_the_modelled_air_and_card_time() -> None:
    a, b = socket.socketpair()
    emu = PN532Emulator(field_timing=ft.FieldTiming())
    link = emu.serve(b)
    card = vcard.VirtualDesfire()
    emu.present(LocalCard(card.process, card.uid))
    driver = PN532(SocketStream(a), ack_timeout_ms=200)
    try:
        driver.begin()
        target = driver.list_target()
        assert target is not None
        apdu = bytes.fromhex("9060000000")  # GetVersion
        answer = driver.exchange(apdu)
        deadline = time.monotonic() + 5  # the link notes a frame once its answer is sent
        while emu.trace[-1].cmd != p.CMD_IN_DATA_EXCHANGE and time.monotonic() < deadline:
            time.sleep(0.01)
        frames = list(emu.trace)
        listed = next(f for f in frames if f.cmd == p.CMD_IN_LIST_PASSIVE_TARGET)
        assert listed.answered - listed.received >= ft.activation_s(7, bytes(target.ats)) * 0.999
        ex = frames[-1]
        assert (ex.cmd, ex.ins) == (p.CMD_IN_DATA_EXCHANGE, 0x60)
        want = ft.exchange_air_s(apdu, len(answer)) + ft.PN532_COMMAND_S
        assert ex.answered - ex.received >= want * 0.999
        assert ex.received - ex.arrived >= (len(apdu) + 10) * BYTE_115200 * 0.999
    finally:
        link.close()
        a.close()


def test_fast_link_records_no_trace() -> None:
    a, b = socket.socketpair()
    emu = PN532Emulator()
    link = emu.serve(b)
    try:
        assert PN532(SocketStream(a), ack_timeout_ms=200).begin()
        assert not emu.trace and emu.pending_s == 0.0
    finally:
        link.close()
        a.close()


def test_bench_splits_a_presentation_into_steps() -> None:
    from host_tools.benchmarks.card_flow import STEPS, field_steps
    from host_tools.pn532_emu import FrameTime

    ex = p.CMD_IN_DATA_EXCHANGE
    trace = [
        FrameTime(p.CMD_IN_LIST_PASSIVE_TARGET, None, 0.010, 0.011, 0.020),  # empty, card not yet
        FrameTime(p.CMD_IN_LIST_PASSIVE_TARGET, None, 0.070, 0.071, 0.080),  # finds it
        FrameTime(ex, 0x5A, 0.080, 0.081, 0.088),
        FrameTime(ex, 0x64, 0.088, 0.089, 0.095),
        FrameTime(ex, 0x71, 0.096, 0.097, 0.105),
        FrameTime(ex, 0xAF, 0.106, 0.110, 0.125),
        FrameTime(ex, 0x51, 0.126, 0.127, 0.136),
        FrameTime(ex, 0xAD, 0.137, 0.139, 0.150),
        FrameTime(p.CMD_IN_RELEASE, None, 0.161, 0.162, 0.164),  # after the relay
    ]
    steps = field_steps(trace, placed_s=0.030, relay_s=0.160, lookup_s=0.001)
    assert set(steps) == set(STEPS)
    want = {"poll": 0.040, "select": 0.025, "auth": 0.030, "read": 0.023, "mac": 0.002,
            "lookup": 0.001, "relay": 0.009}
    assert steps == pytest.approx(want)
    assert sum(steps.values()) == pytest.approx(0.160 - 0.030)  # the steps add up to the whole


def _waiting_driver(emu: PN532Emulator) -> tuple[PN532, socket.socket, object]:
    a, b = socket.socketpair()
    link = emu.serve(b)
    driver = PN532(SocketStream(a), ack_timeout_ms=200)
    driver.begin()
    driver.rf_retries(p.RETRY_FOREVER)
    return driver, a, link


def test_a_card_placed_mid_wait_is_found_at_the_chips_next_try() -> None:
    """The door's waiting mode against the field-timed emulator: the held InListPassiveTarget
    answers for a card placed while it waits, and the trace puts the try that found it at most
    one empty-field try after the card was placed (never before)."""
    emu = PN532Emulator(field_timing=ft.FieldTiming())
    driver, a, link = _waiting_driver(emu)
    card = vcard.VirtualDesfire()
    try:
        import threading

        timer = threading.Timer(0.15, lambda: emu.present(LocalCard(card.process, card.uid)))
        timer.start()
        target = driver.wait_target(5000)
        timer.join()
        assert target is not None and target.uid == card.uid
        deadline = time.monotonic() + 5  # the link notes the answer once it is sent
        while time.monotonic() < deadline and len(
                [f for f in emu.trace if f.cmd == p.CMD_IN_LIST_PASSIVE_TARGET]) < 2:
            time.sleep(0.01)
        found = [f for f in emu.trace if f.cmd == p.CMD_IN_LIST_PASSIVE_TARGET][-1]
        assert emu.placed_at <= found.arrived < emu.placed_at + ft.PN532_EMPTY_TRY_S + 1e-9
        assert found.answered - found.arrived >= ft.activation_s(7, bytes(target.ats)) * 0.999
    finally:
        link.close()
        a.close()


def test_an_empty_field_waited_on_reports_nothing_and_another_command_ends_the_wait() -> None:
    for timing in (None, ft.FieldTiming()):
        emu = PN532Emulator(field_timing=timing)
        driver, a, link = _waiting_driver(emu)
        try:
            assert driver.wait_target(100) is None
            assert emu.holding()  # the command stays pending: nothing more on the wire
            assert driver.firmware_version() == b"\x32\x01\x06\x07"  # aborted first, then this
            assert not emu.holding()
            card = vcard.VirtualDesfire()
            emu.present(LocalCard(card.process, card.uid))
            # A card already there: the one command is answered, never held (the 2 s are for a
            # link thread held up on a busy machine, not for the chip).
            listed = emu.commands.count(p.CMD_IN_LIST_PASSIVE_TARGET)
            target = driver.wait_target(2000)
            assert target is not None and target.uid == card.uid
            assert emu.commands.count(p.CMD_IN_LIST_PASSIVE_TARGET) == listed + 1
            assert driver.exchange(bytes.fromhex("9060000000"))[-2:] == b"\x91\xaf"
        finally:
            link.close()
            a.close()
