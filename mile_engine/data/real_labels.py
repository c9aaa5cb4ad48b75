"""ReaL labels (Beyer et al. 2020, "Are we done with ImageNet?"): `real.json`, checked
entry by entry, as padded tables and multi-hot sets.

Entry i of `real.json` is the list of classes of `ILSVRC2012_val_{i+1:08d}`; an empty
list means the raters found no class that fits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mile_engine.config.schema import SettingsError
from mile_engine.oserrors import open_regular

NUM_CLASSES = 1000


def validate_real(document: Any, source: str) -> list[list[int]]:
    """Check a parsed `real.json`: a list of lists of class ids in 0..999.

    Raises:
        SettingsError: naming the first bad entry, its file name and what is wrong.
    """
    if not isinstance(document, list):
        raise SettingsError(
            f"{source}: expected a JSON list of {NUM_CLASSES}-class label lists (one per "
            f"validation image), got a {type(document).__name__}."
        )
    if not document:
        raise SettingsError(f"{source}: the list is empty.")
    for i, entry in enumerate(document):
        where = f"{source}: entry {i} (ILSVRC2012_val_{i + 1:08d})"
        if not isinstance(entry, list):
            raise SettingsError(f"{where} is {json.dumps(entry)}, expected a list of class ids.")
        for value in entry:
            if not isinstance(value, int) or isinstance(value, bool):
                raise SettingsError(
                    f"{where} holds {json.dumps(value)}, expected integer class ids 0..999."
                )
            if not 0 <= value < NUM_CLASSES:
                raise SettingsError(f"{where} holds class {value}, outside 0..999.")
    return document


def load_real(path: Path) -> list[list[int]]:
    """Load and validate ReaL's `real.json`; entry i belongs to ILSVRC2012_val_{i+1}."""
    try:
        # A regular file only: a named pipe would block the run, a device never end.
        with open_regular(path) as f:
            document = json.load(f)
    except FileNotFoundError:
        raise SettingsError(
            f"real_path '{path}' does not exist; get real.json from "
            "https://github.com/google-research/reassessed-imagenet."
        ) from None
    except OSError as exc:
        raise SettingsError(f"real_path '{path}': cannot read it ({exc.strerror}).") from None
    except json.JSONDecodeError as exc:
        raise SettingsError(
            f"real_path '{path}': not valid JSON (line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg})."
        ) from None
    except (ValueError, RecursionError) as exc:  # not UTF-8, a number of 5,000 digits
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SettingsError(f"real_path '{path}': not readable JSON ({first[:120]}).") from None
    return validate_real(document, f"real_path '{path}'")


def real_table(real: list[list[int]], entries: torch.Tensor, source: str) -> torch.Tensor:
    """The ReaL sets of `entries` as int64 [N, K], padded with -1.

    Raises:
        SettingsError: when real.json is too short for a validation file.
    """
    last = int(entries.max())
    if last >= len(real):
        raise SettingsError(
            f"{source} has {len(real):,} entries but the validation image "
            f"ILSVRC2012_val_{last + 1:08d} needs entry {last}; is it the right real.json "
            "for this validation set?"
        )
    rows = [real[i] for i in entries.tolist()]
    width = max(1, max(len(r) for r in rows))
    table = torch.full((len(rows), width), -1, dtype=torch.int64)
    for i, row in enumerate(rows):  # once at start-up, not in the training loop
        table[i, : len(row)] = torch.tensor(row, dtype=torch.int64)
    return table


def multi_hot(table: torch.Tensor, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """Padded class lists int64 [B, K] (-1 = none) -> bool [B, C]; empty lists give False rows."""
    # Padding goes to an extra column that is cut off, so no Python loop is needed.
    hot = torch.zeros(len(table), num_classes + 1, dtype=torch.bool, device=table.device)
    hot.scatter_(1, table.masked_fill(table < 0, num_classes), True)
    return hot[:, :num_classes]

