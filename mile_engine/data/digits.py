"""The embedded handwritten digits: 1,797 8x8 tiles shipped inside the package.

Source: the test set of the UCI "Optical Recognition of Handwritten Digits" data set
(E. Alpaydin, C. Kaynak, 1998), CC BY 4.0. See NOTICE.
"""

from __future__ import annotations

import gzip
from importlib import resources

import torch

from mile_engine.data.tiles import TileBank

# Every fifth digit is a validation tile: a fixed split, the same on every machine.
VALIDATION_EVERY = 5


def load_digits() -> tuple[TileBank, TileBank]:
    """Return the (train, validation) tile banks of the embedded digits, uint8 0..255."""
    raw = resources.files("mile_engine.data").joinpath("digits.csv.gz").read_bytes()
    rows = [line.split(",") for line in gzip.decompress(raw).decode("ascii").split()]
    table = torch.tensor([[int(v) for v in row] for row in rows], dtype=torch.int64)
    # Pixels are 0..16: stretch them to the 0..255 range of the other grids.
    pixels = (table[:, :64] * 255 + 8) // 16
    tiles = pixels.to(torch.uint8).view(-1, 8, 8)
    labels = table[:, 64]
    is_val = torch.arange(len(labels)) % VALIDATION_EVERY == 0
    names = [str(d) for d in range(10)]
    return (
        TileBank(tiles[~is_val], labels[~is_val], names),
        TileBank(tiles[is_val], labels[is_val], names),
    )
