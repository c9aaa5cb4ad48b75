"""Tiny runs trained for real on the CPU, and checkpoints with fixed logits."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from mile_engine.checkpoints import RunCheckpointer
from mile_engine.config.loader import load_settings
from mile_engine.control import Control
from mile_engine.runstore.manifest import read_records
from mile_engine.session import open_run
from mile_engine.trainer import Trainer
from tests.helpers.settings import tiny


@dataclasses.dataclass
class TrainedRun:
    """A tiny finished MILe run: its checkpoint, what it recorded, the trainer."""

    checkpoint: Path
    recorded: dict[str, float]
    sweep: dict[str, dict[str, float]]
    trainer: Trainer


def train_tiny(root: Path, **changes: object) -> TrainedRun:
    """Train one tiny generation on the CPU and return its evaluated checkpoint."""
    settings = tiny(epoch_num=1, checkpoint_path=str(root), **changes)
    trainer = open_run(settings)
    assert trainer.train().status == "finished"
    record = read_records(trainer.run_dir)[-1]
    assert record.metrics is not None
    return TrainedRun(trainer.run_dir / record.file, record.metrics,
                      trainer.history[-1]["sweep"], trainer)


def sure_checkpoint(src: Path, dst: Path, sure: dict[int, float]) -> Path:
    """A copy of a checkpoint whose student ignores the image: fixed logits per class."""
    state = torch.load(src, weights_only=True)
    fc_w, fc_b = state["student"]["fc.weight"], state["student"]["fc.bias"]
    fc_w.zero_()
    fc_b.fill_(-12.0)
    for c, logit in sure.items():
        fc_b[c] = logit
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, dst)
    return dst


def fixed_checkpoint(folder: Path) -> Path:
    """A checkpoint whose student and teacher give the same logits for every image:
    the snapshot does not depend on the floating point of a machine."""
    folder.mkdir(parents=True)
    trainer = Trainer(tiny(checkpoint_path=str(folder)), folder)
    for net, bias in ((trainer.student, {4: 4.0, 1: 0.5}),
                      (trainer.teacher, {4: 4.0, 1: 1.0, 7: 0.0})):
        assert isinstance(net.fc, nn.Linear)
        with torch.no_grad():
            net.fc.weight.zero_()
            net.fc.bias.fill_(-8.0)
            for c, b in bias.items():
                net.fc.bias[c] = b
    saver = RunCheckpointer(folder, 3)
    path = Path(saver.save(trainer, "request").path)
    saver.close()
    return path


def tiny_checkpoint_run(root: Path, epochs: int = 2, extra: Sequence[str] = ()) -> Path:
    """Train a tiny run to its end in this process (the working folder's mile.toml, runs
    under `root`); return its folder."""
    settings = load_settings(Path("mile.toml"), [f"checkpoint_path={root}",
                                                 f"epoch_num={epochs}", *extra])
    trainer = open_run(settings, [], Control())
    ended = trainer.train()
    assert ended.status == "finished"
    return Path(trainer.run_dir)


