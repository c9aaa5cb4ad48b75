"""Hyper-parameter sweeps over run settings, with Optuna, across processes and machines.

A sweep is an Optuna study kept in a journal file in the runs folder
(`CHECKPOINT_PATH/sweeps/NAME.journal`, Optuna's `JournalStorage` with
`JournalFileBackend`), so that every process that can reach the folder (another
terminal, another node of a cluster over a shared file system) joins it with no
database server. The study's own attributes hold what a joining worker needs: the
search space, the metric, the number of trials and the base settings.

Each trial is an ordinary run (`mile_engine.session.open_run`) in its own folder under
`checkpoint_path`, with a `sweep.json` beside its settings naming the sweep and the
trial, so the runs list, watch, steering, resume and compare all work on it. Every
evaluation is reported to Optuna's pruner; a trial it prunes is stopped through the
trainer's control (so it saves, like any stop) and told to the study as pruned. A
trial's value is the best value of the metric over its generations (the run's kept
best checkpoint).

Lost trials: Optuna's journal storage has no heartbeat, so each worker holds an
exclusive lock on a file of its own (`sweeps/NAME.workers/HOST-PID-…`) for as long as
it lives, and names that file in each trial it runs. Before drawing a trial, every
worker looks at the trials still marked running: one whose worker's lock can be taken
belongs to a dead worker (killed, its node lost). That trial is marked failed
(`lost` in its attributes) and its parameters are queued again, so the sweep still
ends with the number of trials it was asked for. Trials are drawn under a lock of
their own (`sweeps/NAME.lock`), so that several workers never draw more than the
number asked for, and never the same queued trial twice.

Optuna, torch and the trainer are imported where they are used: the runs list reads
trial tags from here, and the console opens without loading torch.
"""

from mile_engine.sweep.report import SweepReport, TrialRow, sweep_report, toml_fragment
from mile_engine.sweep.space import (
    Dimension,
    SweepError,
    parse_space,
    parse_spaces,
    suggest,
)
from mile_engine.sweep.study import (
    MACHINE_SETTINGS,
    SWEEP_HINT,
    SWEEPS_DIR,
    SweepSpec,
    WorkerLock,
    base_settings,
    check_name,
    draw_trial,
    journal_path,
    list_sweeps,
    load_spec,
    open_sweep,
    reap_lost_trials,
    require_optuna,
    worker_alive,
)
from mile_engine.sweep.trials import (
    AUTO_METRIC,
    SWEEP_FILE,
    TrialResult,
    read_tag,
    run_trial,
    run_worker,
    sweep_of,
)

__all__ = [
    "AUTO_METRIC", "MACHINE_SETTINGS", "SWEEPS_DIR", "SWEEP_FILE", "SWEEP_HINT", "Dimension",
    "SweepError", "SweepReport", "SweepSpec", "TrialResult", "TrialRow", "WorkerLock",
    "base_settings", "check_name", "draw_trial", "journal_path", "list_sweeps", "load_spec",
    "open_sweep", "parse_space", "parse_spaces", "read_tag", "reap_lost_trials",
    "require_optuna", "run_trial", "run_worker", "suggest", "sweep_of", "sweep_report",
    "toml_fragment", "worker_alive",
]
