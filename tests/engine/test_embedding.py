"""The engine's public API, and docs/embedding.md's example run as it is written.

The example trains a network of the reader's own on a data source of the reader's own;
running it from the page keeps the page and the engine in step.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import torch

import mile_engine
from mile_engine.session import open_run
from tests.helpers.settings import tiny
from tests.helpers.sources import FixedSource, random_batches, val_set

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "embedding.md"
PUBLIC = ("CheckpointError", "Control", "Settings", "SettingsError", "Trainer", "events",
          "load_settings", "open_run")


def code_blocks(text: str) -> list[str]:
    """The ```python blocks of a Markdown page, in order."""
    return re.findall(r"^```python\n(.*?)^```$", text, re.M | re.S)


def test_the_page_example_trains_an_own_model_on_own_data(tmp_path: Path) -> None:
    examples = [b for b in code_blocks(PAGE.read_text(encoding="utf-8")) if "open_run(" in b]
    assert len(examples) == 1
    # A fresh interpreter, as a reader's program would be; cwd is a scratch folder.
    done = subprocess.run([sys.executable, "-c", examples[0]], capture_output=True,
                          text=True, cwd=tmp_path, timeout=600)  # a hang guard only
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["generation 1", "generation 2"]
    assert lines[2].startswith("finished after 12 steps in ")
    assert list(tmp_path.iterdir()) == []  # the example cleans up after itself


def test_the_public_names_come_from_their_modules() -> None:
    from mile_engine import control, session, trainer
    from mile_engine import events as events_module
    from mile_engine.config import loader, schema
    from mile_engine.runstore import files

    assert sorted(mile_engine.__all__) == sorted([*PUBLIC, "__version__"])
    homes = {"CheckpointError": files, "Control": control, "Settings": schema,
             "SettingsError": schema, "Trainer": trainer, "load_settings": loader,
             "open_run": session}
    for name, module in homes.items():
        assert getattr(mile_engine, name) is getattr(module, name)
    assert mile_engine.events is events_module
    assert (ROOT / "mile_engine" / "py.typed").is_file()


PROBE = """
import json, sys
import mile_engine
light = "torch" not in sys.modules
from mile_engine import Trainer
print(json.dumps([light, "torch" in sys.modules]))
"""


def test_importing_the_package_loads_no_torch_until_a_name_is_used() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)  # a hang guard only
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == [True, True]


class Net(torch.nn.Module):
    """A caller's own network for FixedSource's 16-px images and 10 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _own(seed: int = 0) -> tuple[Net, FixedSource]:
    torch.manual_seed(seed)
    return Net(), FixedSource(random_batches(5), [val_set()])


def test_an_own_model_resumes_as_if_never_stopped(tmp_path: Path) -> None:
    # The oracle: the same two generations trained in one go.
    model, source = _own()
    straight = open_run(tiny(checkpoint_path=str(tmp_path / "a"), epoch_num=2, k_t=2, k_s=2),
                        model=model, source=source)
    assert straight.train().status == "finished"
    model, source = _own()
    first = open_run(tiny(checkpoint_path=str(tmp_path / "b"), epoch_num=1, k_t=2, k_s=2),
                     model=model, source=source)
    assert first.train().status == "finished"
    assert first.student is model and first.teacher is not model  # the teacher is a copy
    model, source = _own(seed=1)  # other initial weights: the checkpoint replaces them
    resumed = open_run(tiny(checkpoint_path=str(tmp_path / "b")), resume=first.run_dir,
                       overrides=["epoch_num=2"], model=model, source=source)
    ended = resumed.train()
    assert ended.status == "finished" and ended.global_step == straight.global_step == 8
    for name, value in straight.student.state_dict().items():
        assert torch.equal(resumed.student.state_dict()[name], value), name
