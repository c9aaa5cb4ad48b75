"""Datasets: the embedded digits grids, MNIST-format grids and ImageNet with ReaL labels."""

from __future__ import annotations

import torch

from mile_engine.config import Settings, SettingsError
from mile_engine.data.batch import Batch, DataSource
from mile_engine.data.tiles import GridSource, TileBank

__all__ = ["Batch", "DataSource", "GridSource", "TileBank", "build_source", "load_tiles"]


def load_tiles(settings: Settings) -> tuple[TileBank, TileBank]:
    """The (train, validation) tile banks of a grid dataset."""
    if settings.dataset == "digits":
        from mile_engine.data.digits import load_digits

        return load_digits()
    raise SettingsError(f"dataset '{settings.dataset}' is not available in this version.")


def build_source(settings: Settings, device: torch.device) -> DataSource:
    """Build the data source the settings describe, on `device`."""
    train, val = load_tiles(settings)
    return GridSource(
        train,
        val,
        grid_objects=settings.grid_objects,
        batch_size=settings.batch_size,
        val_size=settings.val_size,
        image_size=settings.image_size,
        device=device,
        seed=settings.seed,
    )
