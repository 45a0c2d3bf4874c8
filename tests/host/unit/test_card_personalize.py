"""The personalizer against the spec-strict virtual card, in process: every command of the
issuing flow passes the card's MAC checks, long answers chain, and each refusal the card can
give becomes one line that says what happened."""

from __future__ import annotations

import pytest

from card_reader import card_session as cs
from crypto.ev2 import CardError
from crypto.keystore import SoftwareKeyStore
from host_tools.cards import sitekeys
from host_tools.cards.desfire import DesfireCard, blank_state
from host_tools.cards.personalize import CREATE_STEP, personalize, step_failure
from host_tools.errors import EXIT_FAILED, UserError

UID = bytes.fromhex("04a1b2c3d4e5f6")


def _store() -> SoftwareKeyStore:
    return SoftwareKeyStore.from_dict(sitekeys.new_site_keys(42))


@pytest.mark.parametrize("frame", [59, 16])
def test_personalize_and_read_on_the_strict_card(frame: int) -> None:
    store = _store()
    card = DesfireCard(blank_state(UID), frame=frame)
    issued = personalize(card.process, store)
    assert issued.uid == UID
    result = cs.CardSession(store).read(card.process, UID, 0x20)
    assert result.ok and result.ref == issued.ref


def test_create_application_needing_the_picc_master_key_says_so() -> None:
    state = blank_state(UID)
    state["picc_key_settings"] = 0x0B  # bit 2 clear: CreateApplication needs the PICC master key
    card = DesfireCard(state)
    with pytest.raises(UserError) as err:
        personalize(card.process, _store())
    msg = str(err.value)
    assert err.value.exit_code == EXIT_FAILED
    assert "requires its PICC master key to create applications" in msg and "91 AE" in msg
    assert "blank defaults" not in msg and "\n" not in msg
    assert state["apps"] == {}


def test_each_refusal_reads_as_what_it_means() -> None:
    assert "91 1E" in step_failure("write the credential", CardError("integrity_error", 0x1E))
    assert "left the reader" in step_failure("set the door read key", CardError("no_response"))
    assert "already has the door application" in step_failure(CREATE_STEP, CardError("duplicate", 0xDE))
    auth = step_failure("authenticate with the new application's default key", CardError("auth_failed", 0xAE))
    assert "not the default all-zero key" in auth
    assert step_failure("write the credential", CardError("card_status", 0xBE)).endswith("91 BE")
