"""The batch every data source hands the trainer, and the protocol of a data source."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch


@dataclass(frozen=True)
class Batch:
    """Model-ready images with their labels, on the training device.

    Attributes:
        images: float [B, 3, H, W], normalised.
        labels: int64 [B] the single (original) label; -1 where unknown.
        real: bool [B, C] the ReaL label set; an all-False row has no ReaL labels.
    """

    images: torch.Tensor
    labels: torch.Tensor
    real: torch.Tensor | None = None


class DataSource(Protocol):
    """What the trainer needs from a dataset."""

    num_classes: int
    class_names: list[str]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one model-ready image."""
        ...

    def train_batch(self) -> Batch:
        """The next training batch, on the training device."""
        ...

    def val_batches(
        self, batch_size: int, rank: int = 0, world_size: int = 1
    ) -> Iterator[Batch]:
        """Validation images with their ReaL sets, in a fixed order of batches.

        Batch `i` of the whole set goes to rank `i % world_size`; one process sees all.
        """
        ...

    def val_targets(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels [N] (-1 = unknown) and ReaL sets bool [N, C] of the validation set."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Position in the training data stream, for exact resume."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the position saved by `state_dict`."""
        ...


@dataclass(frozen=True)
class ValSample:
    """One validation image, to draw and to feed a network.

    Attributes:
        image: uint8 [H, W] (grey) or [H, W, 3] (RGB), as the dataset stores it.
        model_input: float [3, S, S] on the CPU, as the source's validation batches hold it.
        label: the single (original) label; -1 where unknown.
        real: the ReaL classes, ascending.
    """

    image: torch.Tensor
    model_input: torch.Tensor
    label: int
    real: list[int]


@runtime_checkable
class SampleSource(Protocol):
    """A data source that hands out single validation images (for the inspector)."""

    def validation_sample(self, index: int) -> ValSample | None:
        """Validation image `index`; None when its file cannot be decoded."""
        ...
