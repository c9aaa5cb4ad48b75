"""A data source of fixed, known batches, for tests that must know what the trainer saw."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from mile_engine.data import Batch

NUM_CLASSES = 10


def random_batches(
    count: int, size: int = 8, image_size: int = 16, seed: int = 1
) -> list[Batch]:
    """`count` batches of random images with random single labels (no ReaL sets)."""
    gen = torch.Generator().manual_seed(seed)
    return [
        Batch(
            images=torch.randn(size, 3, image_size, image_size, generator=gen),
            labels=torch.randint(0, NUM_CLASSES, (size,), generator=gen),
        )
        for _ in range(count)
    ]


class FixedSource:
    """Hands out `train` batches in order (cycling) and `val` sets for evaluation.

    Each evaluation takes the next of `val` (the last one repeats), so a test can change
    the ReaL sets from one evaluation to the next. `handed_out` counts training batches.
    """

    def __init__(self, train: Sequence[Batch], val: Sequence[Batch]) -> None:
        self.num_classes = NUM_CLASSES
        self.class_names = [str(c) for c in range(NUM_CLASSES)]
        self.train = list(train)
        self.val = list(val)
        self.handed_out = 0
        self.evaluations = 0

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the training images."""
        channels, height, width = self.train[0].images.shape[1:]
        return channels, height, width

    def train_batch(self) -> Batch:
        """The next training batch of the cycle."""
        batch = self.train[self.handed_out % len(self.train)]
        self.handed_out += 1
        return batch

    def _current_val(self) -> Batch:
        return self.val[min(self.evaluations, len(self.val) - 1)]

    def val_batches(
        self, batch_size: int, rank: int = 0, world_size: int = 1
    ) -> Iterator[Batch]:
        """The current validation set as one batch; the next call gets the next set."""
        batch = self._current_val()
        self.evaluations += 1
        yield batch

    def val_targets(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels and ReaL sets of the current validation set."""
        batch = self._current_val()
        assert batch.real is not None
        return batch.labels, batch.real

    def state_dict(self) -> dict[str, Any]:
        """Position in the cycle."""
        return {"handed_out": self.handed_out, "evaluations": self.evaluations}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the position saved by `state_dict`."""
        self.handed_out = state["handed_out"]
        self.evaluations = state["evaluations"]


def val_set(size: int = 8, image_size: int = 16, seed: int = 2) -> Batch:
    """Random validation images whose ReaL set is their single label."""
    batch = random_batches(1, size, image_size, seed)[0]
    real = torch.nn.functional.one_hot(batch.labels, NUM_CLASSES).bool()
    return Batch(batch.images, batch.labels, real)
