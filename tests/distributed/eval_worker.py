"""Run under torchrun by the tests: evaluate fixed weights, sharded, and print the metrics."""

import json
import os
import sys
from pathlib import Path

import torch

from mile_engine import distributed
from mile_engine.config.loader import load_settings
from mile_engine.trainer import Trainer


def main() -> None:
    settings = load_settings(None, [a for a in sys.argv[2:] if a != "--set"])
    ctx = distributed.from_environment()
    distributed.setup(ctx, settings.device)
    trainer = Trainer(settings, Path("."), dist=ctx)
    torch.manual_seed(123)  # the same weights on every rank, whatever the run's seed
    for p in trainer.student.parameters():
        p.data.normal_(0, 0.05)
    metrics = trainer.evaluate()
    if ctx.is_main:
        Path(sys.argv[1]).write_text(json.dumps({"metrics": metrics,
                                                 "sweep": trainer.history[-1]["sweep"]}))
    else:  # what the other ranks computed: the plateau schedule steps on it there too
        Path(f"{sys.argv[1]}.rank{ctx.rank}").write_text(json.dumps({"metrics": metrics}))
    del trainer
    distributed.teardown(synchronize=True)
    # As `mile-tui run` does under torchrun: skip the interpreter's shutdown, where Gloo
    # can abort a process that has already done its work.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
