"""The bench's test cards: each role's card sits on a PC/SC reader named in the rig file
(`[cards]`); the PN532 emulator puts that reader's card in the door's field. Roles that share a
reader need a card changer (`[changer] addr`): a service that puts the named card on the reader
(a robot, an operator's console, or in CI the loopback bench's vpcd harness).

Changer protocol (TCP, one line each way): `place <role> <reader name>` -> `ok` | `err <why>`.
"""

from __future__ import annotations

import socket
from typing import Any

from hil.rig import RigError, select_card_readers
from host_tools.cards import pcsc
from host_tools.errors import UserError


class CardChanger:
    def __init__(self, addr: tuple[str, int], timeout_s: float = 20.0) -> None:
        self.addr = addr
        self.timeout_s = timeout_s

    def place(self, role: str, reader: str) -> None:
        host, port = self.addr
        try:
            with socket.create_connection(self.addr, timeout=self.timeout_s) as s:
                s.sendall(f"place {role} {reader}\n".encode())
                answer = s.makefile("rb").readline().decode().strip()
        except OSError as e:
            raise RigError(f"card changer at {host}:{port}: {e}") from None
        if answer != "ok":
            raise RigError(f"card changer at {host}:{port} did not put the {role} card on "
                           f"{reader!r}: {answer or 'no answer'}")


class BenchCards:
    """Role -> reader, the changer when readers are shared, and the cards' references."""

    def __init__(self, cards: dict[str, str], changer: tuple[str, int] | None) -> None:
        self.readers = select_card_readers(cards, pcsc.reader_names())
        self.changer = CardChanger(changer) if changer is not None else None
        self._shared = {r for r in self.readers.values()
                        if list(self.readers.values()).count(r) > 1}
        self._on: dict[str, str] = {}  # reader -> role last placed there by the changer

    def place(self, role: str) -> str:
        """Make sure `role`'s card is on its reader; returns the reader's name."""
        reader = self.readers[role]
        if reader in self._shared and self._on.get(reader) != role:
            assert self.changer is not None  # RigConfig refuses shared readers without one
            self.changer.place(role, reader)
            self._on[reader] = role
        return reader

    def read_ref(self, role: str, store: Any) -> bytes:
        """The card reference the door will compute for `role`'s card (read as the door does,
        with the site's keys): what the whitelist must hold."""
        from card_reader.card_session import CardSession

        reader = self.place(role)
        try:
            conn, transceive = pcsc.wait_for_card(reader)
        except UserError as e:
            raise RigError(f"the {role} card: {e}") from None
        try:
            uid = transceive(b"\xff\xca\x00\x00\x00")
            if len(uid) < 6 or uid[-2:] != b"\x90\x00":
                raise RigError(f"reader {reader!r} did not give the {role} card's UID")
            atr = bytes(conn.getATR())
            sak = 0x08 if bytes.fromhex("A000000306") in atr else 0x20
            result = CardSession(store).read(transceive, uid[:-2], sak)
        finally:
            pcsc.close(conn)
        if not result.ok:
            raise RigError(f"the {role} card on {reader!r} is not a card of this site "
                           f"({result.reason}): check [site] keys and [cards] {role}")
        return bytes(result.ref)
