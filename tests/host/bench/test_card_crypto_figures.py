"""The card benchmark measures the door's side on MicroPython and CPython and counts AES blocks."""

from __future__ import annotations

from host_tools.benchmarks import card_crypto


def test_card_benchmark_figures() -> None:
    figures = card_crypto.run(set(card_crypto.FIGURES))
    assert set(figures) == set(card_crypto.FIGURES)
    # RndB 1 + RndA||RndB' 2 + response 2 + session keys (subkeys 1, SV1 2, SV2 2) + MAC subkeys 1
    assert figures["card.aes_blocks_per_auth"] == 11
    assert figures["card.aes_blocks_per_session"] > figures["card.aes_blocks_per_auth"]
    assert all(v > 0 for v in figures.values())
