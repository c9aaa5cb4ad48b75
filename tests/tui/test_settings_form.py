"""The console's typed numbers follow the command line's rule: ASCII digits only."""

from __future__ import annotations

import pytest

from mile_tui.screens.more_generations import parse_total
from mile_tui.screens.settings_form import parse_text

ARABIC_INDIC_3 = "\u0663"
FULL_WIDTH_0_5 = "\uff10.\uff15"


@pytest.mark.parametrize(("name", "text", "ascii_text"), [
    ("k_t", ARABIC_INDIC_3, "3"), ("rho", FULL_WIDTH_0_5, "0.5"),
])
def test_the_settings_form_reads_only_ascii_numbers(name: str, text: str,
                                                    ascii_text: str) -> None:
    # The ASCII spelling reads as a number; the other one stays text, which the
    # engine's validation then refuses with its own message (as `--set` does).
    assert parse_text(name, ascii_text) == (int(ascii_text) if name != "rho" else 0.5)
    assert isinstance(parse_text(name, text), str)


def test_more_generations_reads_only_ascii_numbers() -> None:
    assert parse_total("4", 2) == 4
    assert isinstance(parse_total("\u0664", 2), str)
