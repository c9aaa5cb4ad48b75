"""Grid construction: layouts, labels, ReaL sets and the fixed validation grids."""

from __future__ import annotations

import pytest
import torch

from mile_engine.data.digits import load_digits
from mile_engine.data.grids import CENTRE, compose_grids
from mile_engine.data.tiles import GridSource, TileBank


def hand_tiles() -> tuple[torch.Tensor, torch.Tensor]:
    """Ten 2x2 tiles whose every pixel is 10 * (class + 1): a tile's class is readable."""
    labels = torch.arange(10)
    tiles = ((labels + 1) * 10).to(torch.uint8)[:, None, None].expand(10, 2, 2).clone()
    return tiles, labels


@pytest.mark.parametrize("objects", [1, 3, 9])
def test_grid_contents_labels_and_real_sets(objects: int) -> None:
    tiles, labels = hand_tiles()
    gen = torch.Generator().manual_seed(1)
    grids = compose_grids(tiles, labels, 10, 500, objects, gen)
    assert grids.images.shape == (500, 6, 6)
    cells = grids.images.view(500, 3, 2, 3, 2).permute(0, 1, 3, 2, 4)[..., 0, 0].reshape(500, 9)
    filled = cells > 0
    assert (filled.sum(1) == objects).all()
    assert filled[:, CENTRE].all()
    cell_classes = cells.long() // 10 - 1
    for b in range(500):  # a per-image reference, to check the batched construction
        classes = set(cell_classes[b][filled[b]].tolist())
        assert set(grids.real[b].nonzero().flatten().tolist()) == classes
        assert int(grids.labels[b]) in classes
        assert (grids.tile_index[b] >= 0).tolist() == filled[b].tolist()
    if objects == 1:
        assert (grids.labels == cell_classes[:, CENTRE]).all()


def test_training_label_distribution_follows_the_rule() -> None:
    # Each tile its own class (100 tiles, 100 classes): the label names its cell exactly.
    n = 100
    tiles = torch.arange(1, n + 1, dtype=torch.uint8)[:, None, None].expand(n, 1, 1).clone()
    labels = torch.arange(n)
    gen = torch.Generator().manual_seed(7)
    grids = compose_grids(tiles, labels, n, 40_000, 3, gen)
    centre_class = grids.tile_index[:, CENTRE]
    outer = grids.tile_index.clone()
    outer[:, CENTRE] = -1
    ambiguous = (outer == centre_class[:, None]).any(1)
    clear = ~ambiguous
    from_centre = (grids.labels == centre_class)[clear].float().mean().item()
    # 0.6 +- 4 standard errors (sd = sqrt(.24 / ~39k) = 0.0025).
    assert abs(from_centre - 0.6) < 0.01
    # Among the outer picks, the two filled outer cells are chosen equally often.
    outer_cells = outer[clear & (grids.labels != centre_class)]
    picked = grids.labels[clear & (grids.labels != centre_class)]
    first = outer_cells.masked_fill(outer_cells < 0, n + 1).min(1).values
    share_first = (picked == first).float().mean().item()
    assert abs(share_first - 0.5) < 0.02


def test_validation_grids_identical_across_sources() -> None:
    train, val = load_digits()
    a = GridSource(train, val, 3, 8, 200, 0, torch.device("cpu"), seed=1)
    b = GridSource(train, val, 3, 8, 200, 0, torch.device("cpu"), seed=99)
    for x, y in zip(a.val_batches(64), b.val_batches(64), strict=True):
        assert torch.equal(x.images, y.images)
        assert torch.equal(x.labels, y.labels)
        assert x.real is not None and y.real is not None
        assert torch.equal(x.real, y.real)
    # The training stream follows the run's seed.
    assert not torch.equal(a.train_batch().images, b.train_batch().images)


def test_digits_split_and_model_input() -> None:
    train, val = load_digits()
    assert len(train.labels) + len(val.labels) == 1797
    assert train.tiles.dtype == torch.uint8 and int(train.tiles.max()) == 255
    assert set(val.labels.tolist()) == set(range(10))
    source = GridSource(train, val, 3, 4, 16, 48, torch.device("cpu"), seed=0)
    batch = source.train_batch()
    assert batch.images.shape == (4, 3, 48, 48)
    assert batch.images.min() >= -1 and batch.images.max() <= 1


def test_tile_bank_rejects_mismatched_labels() -> None:
    with pytest.raises(ValueError):
        TileBank(torch.zeros(3, 2, 2, dtype=torch.uint8), torch.zeros(2), ["a"])


# ------------------------------------------------------------------ grid sources, pixel by pixel
# Grid sources against plain per-grid readings of their pixels.
#
# Tiles are flat squares whose grey level names the tile, and the training and validation
# banks use disjoint grey levels, so every cell of every grid says which tile of which bank
# it holds: validation grids built from the training bank, cells written to the wrong
# place, or blanks left filled show up as wrong pixels.
CLASSES = 5
SIDE = 3  # tile side in pixels
# Training tiles: grey 10..59; validation tiles: grey 100..149; blank cells: 0.
TRAIN_LEVELS = range(10, 60)
VAL_LEVELS = range(100, 150)


def bank(levels: range) -> TileBank:
    """One flat SIDE x SIDE tile per grey level; tile k is class k % CLASSES."""
    grey = torch.tensor(list(levels), dtype=torch.uint8)
    tiles = grey[:, None, None].expand(len(grey), SIDE, SIDE).clone()
    labels = torch.arange(len(grey)) % CLASSES
    return TileBank(tiles, labels, [f"c{k}" for k in range(CLASSES)])


def read_cells(images: torch.Tensor) -> torch.Tensor:
    """Grey level of each cell, row-major, int64 [B, 9]; -1 where a cell is not flat."""
    cells = torch.full((len(images), 9), -1, dtype=torch.int64)
    for r in range(3):
        for c in range(3):
            block = images[:, r * SIDE:(r + 1) * SIDE, c * SIDE:(c + 1) * SIDE].reshape(
                len(images), -1).long()
            flat = (block == block[:, :1]).all(dim=1)
            cells[:, 3 * r + c] = torch.where(flat, block[:, 0], -1)
    return cells


def source(objects: int, seed: int = 0) -> GridSource:
    """A grid source over the two banks, at the tiles' own resolution."""
    return GridSource(bank(TRAIN_LEVELS), bank(VAL_LEVELS), objects, 16, 300, 0,
                      torch.device("cpu"), seed=seed)


def grey_of(index: torch.Tensor, first_level: int) -> torch.Tensor:
    """Expected grey level of cells holding tile `index` (0 where blank, index -1)."""
    return torch.where(index >= 0, index + first_level, torch.zeros_like(index))


def test_validation_grids_hold_validation_tiles_in_their_cells() -> None:
    for objects in (1, 4, 9):
        src = source(objects)
        images = torch.stack([src.val_sample(i)[0] for i in range(src.val_size)])
        cells = read_cells(images)
        assert (cells >= 0).all(), "every cell is one flat tile or blank"
        filled = cells > 0
        assert (filled.sum(dim=1) == objects).all()
        assert filled[:, CENTRE].all()
        in_val = (cells >= VAL_LEVELS.start) & (cells < VAL_LEVELS.stop)
        assert torch.equal(in_val, filled), "validation grids use the validation bank only"
        # The labels and ReaL sets the source hands out are those of its pixels.
        labels, real = src.val_targets()
        classes = (cells - VAL_LEVELS.start) % CLASSES
        for b in range(len(cells)):
            present = set(classes[b][filled[b]].tolist())
            assert set(real[b].nonzero().flatten().tolist()) == present
            assert int(labels[b]) in present


def test_training_grids_hold_training_tiles_where_their_index_says() -> None:
    src = source(3, seed=5)
    gen_state = src.generator.get_state()
    train = bank(TRAIN_LEVELS)
    grids = compose_grids(train.tiles, train.labels, CLASSES, 16, 3, src.generator)
    cells = read_cells(grids.images)
    assert torch.equal(cells, grey_of(grids.tile_index, TRAIN_LEVELS.start))
    # The batch the source hands out is that grid, normalised to [-1, 1].
    src.generator.set_state(gen_state)
    batch = src.train_batch()
    grey = (batch.images[:, 0] * 0.5 + 0.5) * 255
    assert torch.allclose(grey, grids.images.float(), atol=1e-3)
    assert torch.equal(batch.labels, grids.labels)


def picked_positions(objects: int, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grids whose every tile is its own class (no two cells share a class, so the label
    names its cell): (filled bool [N, 9], position of the labelled cell [N])."""
    n = 400  # tiles (and classes): repeats within a grid are rare and are dropped
    tiles = torch.zeros(n, 1, 1, dtype=torch.uint8)
    grids = compose_grids(tiles, torch.arange(n), n, count,
                          objects, torch.Generator().manual_seed(seed))
    index = grids.tile_index
    filled = index >= 0
    # Keep grids whose filled cells hold distinct tiles.
    ordered = index.masked_fill(~filled, -1).sort(dim=1).values
    distinct = ((ordered[:, 1:] != ordered[:, :-1]) | (ordered[:, 1:] < 0)).all(dim=1)
    position = (index == grids.labels[:, None]).float().argmax(dim=1)
    return filled[distinct], position[distinct]


def test_layouts_and_outer_picks_are_uniform_over_positions() -> None:
    outer = [c for c in range(9) if c != CENTRE]
    # Two objects: the one outer cell is any of the eight equally often.
    filled, _ = picked_positions(2, 20_000, seed=3)
    shares = filled[:, outer].float().mean(dim=0)
    assert torch.allclose(shares, torch.full((8,), 1 / 8), atol=0.01), shares
    # Nine objects: when the label is not the centre's, each outer cell is picked
    # equally often (sd of each share about 0.004 over ~8,000 picks).
    filled, position = picked_positions(9, 20_000, seed=4)
    off_centre = position[position != CENTRE]
    counts = torch.bincount(off_centre, minlength=9)[outer].float()
    assert torch.allclose(counts / len(off_centre), torch.full((8,), 1 / 8), atol=0.015), counts
    assert abs(len(off_centre) / len(position) - 0.4) < 0.015


def test_every_tile_of_the_bank_is_drawn_equally_often() -> None:
    # Ten tiles, 5,000 grids of four objects: 20,000 filled cells, each tile's share
    # 1/10 with sd about 0.002.
    tiles = torch.zeros(10, 1, 1, dtype=torch.uint8)
    grids = compose_grids(tiles, torch.arange(10), 10, 5_000, 4,
                          torch.Generator().manual_seed(11))
    drawn = grids.tile_index[grids.tile_index >= 0]
    shares = torch.bincount(drawn, minlength=10).float() / len(drawn)
    assert torch.allclose(shares, torch.full((10,), 0.1), atol=0.01), shares
