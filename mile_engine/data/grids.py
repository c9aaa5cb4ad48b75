"""Multi-label 3x3 grids of tiles, composed as batched tensor operations.

DESIGN.md's construction: the centre cell and `grid_objects - 1` other cells, chosen at
random, hold a random tile; the rest are blank. The single training label is the centre
tile's class with probability 0.6, otherwise the class of one of the other filled tiles,
chosen uniformly. The ReaL set is the set of classes of all filled tiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

CENTRE = 4
CENTRE_LABEL_PROB = 0.6


@dataclass(frozen=True)
class GridBatch:
    """A batch of grids before normalisation.

    Attributes:
        images: uint8 [B, 3h, 3w] grey-level grids.
        labels: int64 [B] the single training label.
        real: bool [B, C] the classes of all filled tiles.
        tile_index: int64 [B, 9] the tile of each cell (-1 where blank).
    """

    images: torch.Tensor
    labels: torch.Tensor
    real: torch.Tensor
    tile_index: torch.Tensor


def sample_layout(
    batch_size: int, num_tiles: int, grid_objects: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw which cells are filled and with which tile.

    Returns:
        filled: bool [B, 9], the centre always True, exactly `grid_objects` True per row.
        tiles: int64 [B, 9] tile indices (meaningful only where filled).
    """
    device = generator.device
    others = torch.tensor([c for c in range(9) if c != CENTRE], device=device)
    # A random permutation of the 8 outer cells per grid; its first k-1 get a tile.
    order = torch.rand(batch_size, 8, generator=generator, device=device).argsort(dim=1)
    chosen = others[order[:, : grid_objects - 1]]
    filled = torch.zeros(batch_size, 9, dtype=torch.bool, device=device)
    filled[:, CENTRE] = True
    filled.scatter_(1, chosen, True)
    tiles = torch.randint(num_tiles, (batch_size, 9), generator=generator, device=device)
    return filled, tiles


def choose_labels(
    cell_classes: torch.Tensor, filled: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """The single training label: the centre's class w.p. 0.6, else another filled cell's.

    With one object only, the centre is the only choice.
    """
    device = generator.device
    batch_size = cell_classes.shape[0]
    outer = filled.clone()
    outer[:, CENTRE] = False
    has_outer = outer.any(dim=1)
    # Uniform choice among the filled outer cells: the argmax of random keys on them.
    keys = torch.rand(batch_size, 9, generator=generator, device=device)
    pick_outer = keys.masked_fill(~outer, -1.0).argmax(dim=1)
    take_centre = torch.rand(batch_size, generator=generator, device=device) < CENTRE_LABEL_PROB
    cell = torch.where(take_centre | ~has_outer, torch.full_like(pick_outer, CENTRE), pick_outer)
    return cell_classes.gather(1, cell[:, None]).squeeze(1)


def compose_grids(
    tiles: torch.Tensor,
    tile_labels: torch.Tensor,
    num_classes: int,
    batch_size: int,
    grid_objects: int,
    generator: torch.Generator,
) -> GridBatch:
    """Compose `batch_size` grids from a tile bank with one gather.

    Args:
        tiles: uint8 [N, h, w] tile bank, on the generator's device.
        tile_labels: int64 [N] tile classes.
        num_classes: C, the width of the ReaL multi-hot.
        batch_size: grids to make.
        grid_objects: filled cells per grid, 1..9.
        generator: the random stream (its device decides where the work runs).
    """
    if not 1 <= grid_objects <= 9:
        raise ValueError(f"grid_objects must be in 1..9, got {grid_objects}")
    filled, index = sample_layout(batch_size, tiles.shape[0], grid_objects, generator)
    cell_classes = tile_labels[index]
    labels = choose_labels(cell_classes, filled, generator)
    one_hot = torch.nn.functional.one_hot(cell_classes, num_classes).bool()
    real = (one_hot & filled[:, :, None]).any(dim=1)
    h, w = tiles.shape[1:]
    cells = tiles[index] * filled[:, :, None, None].to(tiles.dtype)
    images = cells.view(batch_size, 3, 3, h, w).permute(0, 1, 3, 2, 4).reshape(
        batch_size, 3 * h, 3 * w
    )
    return GridBatch(images, labels, real, index.masked_fill(~filled, -1))
