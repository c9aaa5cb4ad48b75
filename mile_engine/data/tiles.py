"""Tile banks and the grid data source shared by digits, mnist and fashion-mnist."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from mile_engine.data.batch import Batch, ValSample
from mile_engine.data.grids import compose_grids

# Validation grids use their own fixed seed, not the run's: every run scores the same grids.
VALIDATION_SEED = 2022
# Grey levels are mapped to [-1, 1]; batch norm takes care of the rest.
MEAN, STD = 0.5, 0.5
# A CUDA generator's state is Philox's (seed, offset): 16 bytes. A CPU generator's is
# mt19937's 5056 bytes. Checkpoints from before the device was recorded are told apart
# by this length.
PHILOX_STATE_BYTES = 16

log = logging.getLogger(__name__)

Warn = Callable[[str], None]


@dataclass(frozen=True)
class TileBank:
    """Tiles of one split: uint8 [N, h, w] images, int64 [N] labels and the class names."""

    tiles: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]

    def __post_init__(self) -> None:
        if self.tiles.ndim != 3 or len(self.tiles) != len(self.labels):
            raise ValueError("a tile bank needs [N, h, w] tiles and N labels")

    @property
    def tile_size(self) -> int:
        """Side of one (square) tile in pixels."""
        return int(self.tiles.shape[1])


def to_model_input(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 [B, H, W] grey grids -> normalised float [B, 3, S, S] (S = image_size or H)."""
    x = images.unsqueeze(1).float().div_(255.0)
    if image_size and image_size != x.shape[-1]:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    x = x.sub_(MEAN).div_(STD)
    # torchvision's ResNets take RGB; a grey grid is the same in the three channels.
    return x.expand(-1, 3, -1, -1)


class GridSource:
    """Training grids drawn fresh on the device every step; fixed validation grids.

    Attributes:
        generator: the training stream's random generator, on the device.
        seed: the stream's seed.
        draws: training batches drawn so far, across resumes.
        notes: remarks about the data stream, such as a resume onto another device
            type (also sent to `warn`).
    """

    def __init__(
        self,
        train: TileBank,
        val: TileBank,
        grid_objects: int,
        batch_size: int,
        val_size: int,
        image_size: int,
        device: torch.device,
        seed: int,
        warn: Warn | None = None,
    ) -> None:
        self.num_classes = len(train.class_names)
        self.class_names = train.class_names
        self.grid_objects = grid_objects
        self.batch_size = batch_size
        self.image_size = image_size or 3 * train.tile_size
        self.device = device
        self._train_tiles = train.tiles.to(device)
        self._train_labels = train.labels.to(device)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        self.seed = seed
        self.draws = 0
        self.warn: Warn = warn or (lambda text: log.warning("%s", text))
        self.notes: list[str] = []
        # Validation grids are composed once on the CPU with a fixed seed, so they are
        # identical across runs and devices, and kept as uint8 on the device.
        val_gen = torch.Generator().manual_seed(VALIDATION_SEED)
        grids = compose_grids(
            val.tiles, val.labels, self.num_classes, val_size, grid_objects, val_gen
        )
        self._val_images = grids.images.to(device)
        self._val_labels = grids.labels.to(device)
        self._val_real = grids.real.to(device)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one grid as the model sees it."""
        return 3, self.image_size, self.image_size

    @property
    def val_size(self) -> int:
        """Number of validation grids."""
        return len(self._val_labels)

    def train_batch(self) -> Batch:
        """The next training batch, composed on the device."""
        grids = compose_grids(
            self._train_tiles,
            self._train_labels,
            self.num_classes,
            self.batch_size,
            self.grid_objects,
            self.generator,
        )
        self.draws += 1
        return Batch(to_model_input(grids.images, self.image_size), grids.labels, grids.real)

    def val_batches(
        self, batch_size: int, rank: int = 0, world_size: int = 1
    ) -> Iterator[Batch]:
        """The fixed validation grids in order: batches rank, rank + world_size, ..."""
        for start in range(rank * batch_size, self.val_size, batch_size * world_size):
            end = start + batch_size
            yield Batch(
                to_model_input(self._val_images[start:end], self.image_size),
                self._val_labels[start:end],
                self._val_real[start:end],
            )

    def val_targets(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels [N] and ReaL sets bool [N, C] of the whole validation set."""
        return self._val_labels, self._val_real

    def val_sample(self, index: int) -> tuple[torch.Tensor, int, list[int]]:
        """One validation grid as uint8 [H, W] with its label and ReaL classes."""
        real = self._val_real[index].nonzero().flatten().tolist()
        return self._val_images[index].cpu(), int(self._val_labels[index]), real

    def validation_sample(self, index: int) -> ValSample:
        """One validation grid with the model input its validation batch holds."""
        image, label, real = self.val_sample(index)
        return ValSample(image, to_model_input(image[None], self.image_size)[0], label, real)

    def state_dict(self) -> dict[str, Any]:
        """The data order: the training stream's random state, its device type, seed and draws."""
        return {
            "generator": self.generator.get_state(),
            "device": self.generator.device.type,
            "draws": self.draws,
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the training stream where `state_dict` left it.

        On the device type that saved it the stream continues exactly. A stream saved on
        another device type (cuda <-> cpu) cannot be continued: its generator state means
        nothing here. The generator is then reseeded from (seed, batches drawn), the same
        for every resume of that checkpoint, and a note says the run is no longer
        bit-identical to an uninterrupted one.
        """
        saved = state["generator"]
        # Checkpoints written before "device", "seed" and "draws" were recorded hold
        # the generator state alone; its length tells which device type drew it.
        saved_device = str(state.get("device") or _device_of_state(saved))
        self.seed = int(state.get("seed", self.seed))
        self.draws = int(state.get("draws", 0))
        here = self.generator.device.type
        if saved_device == here:
            self.generator.set_state(saved)
            return
        self.generator.manual_seed(_resume_seed(self.seed, self.draws))
        self._note(
            f"the checkpoint's data stream was drawn on {saved_device}; on {here} it "
            f"continues from a fresh stream seeded from (seed {self.seed}, "
            f"{self.draws} batches drawn), so the resumed run is not bit-identical to an "
            "uninterrupted one."
        )

    def _note(self, text: str) -> None:
        self.notes.append(text)
        self.warn(text)


def _device_of_state(state: torch.Tensor) -> str:
    """The device type whose generator produced `state`, judged by its length."""
    return "cuda" if state.numel() == PHILOX_STATE_BYTES else "cpu"


def _resume_seed(seed: int, draws: int) -> int:
    """A seed for a stream resumed on another device, fixed by (seed, draws).

    Hashed rather than added, so it does not coincide with another rank's plain seed
    (`seed + RANK_SEED_STRIDE * rank`) or with a neighbouring resume's.
    """
    digest = hashlib.sha256(f"mile-grid-resume:{seed}:{draws}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)
