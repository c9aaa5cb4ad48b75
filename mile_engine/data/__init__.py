"""Datasets: the embedded digits grids, MNIST-format grids, ImageNet with ReaL labels and
the user's own class-per-sub-folder images ("folder")."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from mile_engine.config.schema import Settings, SettingsError
from mile_engine.data.batch import Batch, DataSource
from mile_engine.data.idx import IDX_DATASETS, IdxError, Progress, load_idx_tiles
from mile_engine.data.tiles import GridSource, TileBank

if TYPE_CHECKING:  # file_source imports torchvision and PIL, needed for image files only
    from mile_engine.data.file_source import InputSpecLike

RANK_SEED_STRIDE = 1_000_003

__all__ = [
    "Batch",
    "DataSource",
    "GridSource",
    "IdxError",
    "Progress",
    "TileBank",
    "build_source",
    "load_tiles",
]


def load_tiles(
    settings: Settings, progress: Progress | None = None
) -> tuple[TileBank, TileBank]:
    """The (train, validation) tile banks of a grid dataset.

    Args:
        settings: `dataset` picks the tiles; `mnist_path` locates MNIST-format files.
        progress: receives download progress when IDX files must be fetched.

    Raises:
        SettingsError: the dataset is not a grid dataset, or its files are unusable.
    """
    if settings.dataset == "digits":
        from mile_engine.data.digits import load_digits

        return load_digits()
    if settings.dataset in IDX_DATASETS:
        return load_idx_tiles(settings.dataset, settings.mnist_path, progress=progress)
    raise SettingsError(f"dataset '{settings.dataset}' is not a grid dataset.")


def build_source(
    settings: Settings,
    device: torch.device,
    progress: Progress | None = None,
    warn: Callable[[str], None] | None = None,
    rank: int = 0,
    world_size: int = 1,
    spec: InputSpecLike | None = None,
) -> DataSource:
    """Build the data source the settings describe, on `device`.

    Args:
        settings: the run's settings.
        device: where batches are delivered.
        progress: called as (task, done, total) while files are downloaded or scanned.
        warn: receives notes (a grid stream resumed on another device type; ImageNet's
            data notes) and ImageNet's skipped-file reports; None logs them as warnings.
        rank, world_size: this process's place in a torchrun job. Grid streams are
            seeded per rank; image-file ranks read disjoint shards of one permutation.
        spec: image files' crop, resize and normalisation; None takes the model's
            (`mile_engine.models.input_spec`). The grids ignore it.
    """
    if settings.dataset in ("imagenet", "folder"):
        # Imported here: torchvision transforms and PIL are only needed for image files.
        from mile_engine.data.folder import FolderSource
        from mile_engine.data.imagenet import ImageNetSource
        from mile_engine.models import input_spec

        kind = ImageNetSource if settings.dataset == "imagenet" else FolderSource
        return kind.from_settings(settings, device, progress, warn, rank, world_size,
                                  spec or input_spec(settings))
    train, val = load_tiles(settings, progress)
    return GridSource(
        train,
        val,
        grid_objects=settings.grid_objects,
        batch_size=settings.batch_size,
        val_size=settings.val_size,
        image_size=settings.image_size,
        device=device,
        # Each rank draws its own grids: a distinct, reproducible stream per rank.
        seed=settings.seed + RANK_SEED_STRIDE * rank,
        warn=warn,
    )
