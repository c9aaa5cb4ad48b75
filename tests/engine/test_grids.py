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
