"""Run folders written by the tests: saves from a fake trainer, and metrics.jsonl records
with fixed times as a real trainer would leave them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torchvision

from mile_engine import events as ev
from mile_engine.checkpoints import RunCheckpointer
from mile_engine.config.schema import Dataset, Schema, Settings
from mile_engine.runstore.layout import METRICS_FILE, SETTINGS_FILE
from mile_engine.runstore.records import event_record
from mile_engine.schemas import phases_of
from tests.helpers.settings import tiny

# 2026-01-01 12:00 UTC: the run folders' times, one hour apart.
T0 = 1767268800.0


class FakeTrainer:
    """The parts of a Trainer a checkpointer reads, with a tiny (or a real) student."""

    def __init__(self, settings: Settings | None = None, real_model: bool = False) -> None:
        self.settings = settings or tiny()
        self.phases = phases_of(self.settings.schema, self.settings.k_t, self.settings.k_s)
        self.generation = self.phase_index = self.step = self.global_step = 0
        self.history: list[dict[str, Any]] = []
        if real_model:
            self.student = torchvision.models.resnet18(num_classes=10).state_dict()
        else:
            self.student = {"fc.weight": torch.randn(10, 4), "fc.bias": torch.zeros(10)}

    def advance(self, steps: int, f1: float | None) -> None:
        """Take `steps` steps; with an F1, end on an evaluated generation boundary."""
        self.global_step += steps
        if f1 is None:
            self.phase_index, self.step = 1, 1
        else:
            self.generation += 1
            self.phase_index = self.step = 0
            self.history.append({"generation": self.generation, "global_step": self.global_step,
                                 "real_f1": f1, "top1": f1 / 2, "sweep": {"0.5": f1}})

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint stores of a trainer."""
        return {
            "student": self.student,
            "teacher": self.student,
            "optimizer": {"state": {}, "param_groups": []},
            "position": {"generation": self.generation, "phase_index": self.phase_index,
                         "step": self.step, "global_step": self.global_step},
            "rng": {"torch": torch.get_rng_state()},
        }


def make_run(root: Path, f1s: list[float | None], keep: int = 10,
             name: str = "run-a", real_model: bool = False) -> Path:
    """A run folder with one save per entry of `f1s` (None: a save between evaluations)."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    (run_dir / "settings.toml").write_text(tiny().to_toml())
    saver = RunCheckpointer(run_dir, keep)
    trainer = FakeTrainer(real_model=real_model)
    for f1 in f1s:
        trainer.advance(5, f1)
        saver.save(trainer, "generation" if f1 is not None else "stop")  # type: ignore[arg-type]
    saver.close()
    return run_dir


def generation_events(gen: int, gens: int, f1: float, best: bool, run_dir: str,
                      k: tuple[int, int] = (3, 2)) -> list[ev.Event]:
    """One MILe generation as a trainer reports it: phases, steps, evaluation, save."""
    k_t, k_s = k
    base = (gen - 1) * (k_t + k_s)
    events: list[ev.Event] = [ev.PhaseStarted(gen, gens, "interactive", k_t)]
    for i in range(1, k_t + 1):
        events.append(ev.StepLogged(gen, "interactive", i, k_t, base + i, gens * (k_t + k_s),
                                    1.0 / (base + i), 0.01, 100.0, float(base + i)))
    events.append(ev.PhaseStarted(gen, gens, "imitation", k_s))
    for i in range(1, k_s + 1):
        step = base + k_t + i
        events.append(ev.StepLogged(gen, "imitation", i, k_s, step, gens * (k_t + k_s),
                                    1.2 / step, 0.01, 100.0, float(step)))
        events.append(ev.PseudoLabelStats(gen, i, step, 1.5, 0.8))
    step = base + k_t + k_s
    events.append(ev.Evaluated(gen, step, {"top1": f1 - 0.1, "real_accuracy": f1 + 0.2,
                                           "real_f1": f1, "coverage": 1.5}, best, 500.0))
    events.append(ev.CheckpointSaved(f"{run_dir}/step-{step:08d}-generation.pt", gen,
                                     "interactive", step, "generation"))
    return events


def write_run(root: Path, name: str, *, schema: Schema = "MILe", dataset: Dataset = "digits",
              gens: int = 3, f1s: tuple[float, ...] = (0.4, 0.5), end: str | None = "finished",
              hour: int = 0, extra: int = 0) -> Path:
    """A run folder as a trainer leaves it: settings.toml and metrics.jsonl with
    `len(f1s)` generations, ended with `end` (None: killed, no end record); every file
    dated `hour` hours after T0. `extra` bytes of padding make its size differ."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    settings = Settings(schema=schema, dataset=dataset, model="resnet18-10", epoch_num=gens,
                        k_t=3, k_s=2, batch_size=8)
    (run_dir / SETTINGS_FILE).write_text(settings.to_toml(), encoding="utf-8")
    events: list[ev.Event] = [ev.RunStarted(str(run_dir), {}, "cpu", "fp32", 1000,
                                            gens * 5, 0, {"ref_f1_all": 0.4, "ref_f1_label": 0.55})]
    best = -1.0
    for gen, f1 in enumerate(f1s, start=1):
        events += generation_events(gen, gens, f1, f1 > best, str(run_dir))
        best = max(best, f1)
    if end is not None:
        top = max(range(len(f1s)), key=lambda i: f1s[i]) if f1s else None
        summary = None if top is None else {"real_f1": f1s[top], "generation": top + 1}
        events.append(ev.RunEnded(end, 5 * len(f1s), 10.0, summary,
                                  "the data source broke" if end == "failed" else None))
    lines = []
    for i, event in enumerate(events):
        record = event_record(event)
        record["time"] = T0 + 3600 * hour + i
        lines.append(json.dumps(record))
    (run_dir / METRICS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    if extra:
        (run_dir / "run.log").write_text("x" * extra, encoding="utf-8")
    stamp = T0 + 3600 * hour
    for path in run_dir.iterdir():
        os.utime(path, (stamp, stamp))
    return run_dir


def every_status(root: Path) -> dict[str, Path]:
    """One run folder per ended status, each an hour newer than the one before."""
    return {
        "finished": write_run(root, "20260101-120000-digits-mile", hour=0),
        "stopped": write_run(root, "20260101-130000-digits-softmax", schema="softmax",
                             end="stopped", hour=1, f1s=(0.3,)),
        "failed": write_run(root, "20260101-140000-mnist-mile", dataset="mnist",
                            end="failed", hour=2, f1s=()),
        "interrupted": write_run(root, "20260101-150000-digits-sigmoid", schema="sigmoid",
                                 end=None, hour=3, f1s=(0.45, 0.42)),
    }
