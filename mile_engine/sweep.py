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
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import socket
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from mile_engine import events as ev
from mile_engine.config import (
    FIELDS,
    GROUPS,
    Settings,
    SettingsError,
    build_settings,
    check_checkpoint_path,
    parse_override,
    shown,
    validate_value,
)
from mile_engine.control import Control

# Optuna, torch and the trainer are imported where they are used: the runs list reads
# trial tags from here, and the console opens without loading torch.

SWEEP_HINT = "pip install 'mile-tui[sweep]'"
SWEEPS_DIR = "sweeps"
SWEEP_FILE = "sweep.json"  # in a trial's run folder: which sweep and trial it is
AUTO_METRIC = "auto"  # mAP where the evaluations have it, else ReaL F1
# Settings a joining worker may set for its own machine (devices, data paths, speed):
# they do not change what a trial trains.
MACHINE_SETTINGS = frozenset({
    "device", "precision", "compile", "num_workers", "decode", "log_every",
    "max_checkpoint_num", "tensorboard", "data_path", "val_path", "real_path", "mnist_path",
    "val_labels_path", "checkpoint_path",
})
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class SweepError(ValueError):
    """A sweep that cannot be started or read: the message says what to fix."""


def require_optuna() -> None:
    """Check that Optuna can be imported.

    Raises:
        SweepError: naming the package to install.
    """
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise SweepError(f"Optuna is not installed; {SWEEP_HINT}.") from None


# -- the search space -------------------------------------------------------------------


@dataclass(frozen=True)
class Dimension:
    """One setting to search: a range of numbers (`low`..`high`, integers or not, on a log
    scale or not) or a list of values to choose from."""

    name: str
    kind: Literal["float", "int", "choice"]
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[Any, ...] = ()

    def to_text(self) -> str:
        """The `--space` text this dimension was read from (normalised)."""
        if self.kind == "choice":
            return f"{self.name}=" + ",".join(_value_text(c) for c in self.choices)
        flags = (":int" if self.kind == "int" else "") + (":log" if self.log else "")
        low, high = (int(self.low), int(self.high)) if self.kind == "int" else (
            self.low, self.high)
        return f"{self.name}={low}:{high}{flags}"


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_space(text: str) -> Dimension:
    """Read one `--space` string.

    `key=LOW:HIGH` (uniform), `key=LOW:HIGH:log` (log-uniform), `key=LOW:HIGH:int`
    (integers; an integer setting is searched in integers anyway), `:int:log` both;
    `key=A,B,C` a choice among values (`gt_or=true,false`, `schema=MILe,sigmoid`). Every
    key must be a setting and every bound and value one that the setting allows.

    Raises:
        SweepError: one line saying what is wrong and what is allowed.
    """
    where = f"--space {shown(text)}"
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key or not raw:
        raise SweepError(f"{where}: write it as key=LOW:HIGH[:log][:int] or key=A,B,C, for "
                         "example --space rho=0.03:0.5:log.")
    if key not in FIELDS:
        try:
            validate_value(key, None, where)
        except SettingsError as exc:
            raise SweepError(str(exc).split(" Known settings:")[0]) from None
    default = FIELDS[key].default
    try:
        if ":" in raw:
            return _parse_range(key, raw, default, where)
        return _parse_choices(key, raw, where)
    except SettingsError as exc:
        raise SweepError(str(exc)) from None


def _parse_range(key: str, raw: str, default: Any, where: str) -> Dimension:
    parts = [p.strip() for p in raw.split(":")]
    flags = parts[2:]
    unknown = [f for f in flags if f not in ("log", "int")]
    if len(parts) < 2 or unknown or len(set(flags)) != len(flags):
        raise SweepError(f"{where}: after LOW:HIGH only :log and :int may follow"
                         f"{', not ' + ':'.join(unknown) if unknown else ''}.")
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        raise SweepError(f"{where}: {key!r} is not a number; give a list of values: "
                         f"{key}=A,B.")
    is_int = "int" in flags or isinstance(default, int)
    bounds: list[float] = []
    for part in parts[:2]:
        try:
            number = float(part) if not is_int else int(part)
        except ValueError:
            kind = "an integer" if is_int else "a number"
            raise SweepError(f"{where}: {part!r} is not {kind}.") from None
        if not math.isfinite(number):
            raise SweepError(f"{where}: {part!r} is not a finite number.")
        validate_value(key, number if isinstance(default, float) else int(number), where)
        bounds.append(number)
    low, high = bounds
    if not low < high:
        raise SweepError(f"{where}: LOW must be below HIGH ({low} >= {high}).")
    log = "log" in flags
    if log and low <= 0:
        raise SweepError(f"{where}: a log scale needs LOW above 0, got {low}.")
    return Dimension(key, "int" if is_int else "float", float(low), float(high), log)


def _parse_choices(key: str, raw: str, where: str) -> Dimension:
    values = []
    for part in raw.split(","):
        if not part.strip():
            raise SweepError(f"{where}: an empty value in the list.")
        _, value = parse_override(f"{key}={part.strip()}")
        values.append(validate_value(key, value, where))
    if len(set(map(repr, values))) != len(values):
        raise SweepError(f"{where}: a value is listed twice.")
    return Dimension(key, "choice", choices=tuple(values))


def parse_spaces(texts: Sequence[str]) -> list[Dimension]:
    """Read every `--space`; a key given twice is an error."""
    dims = [parse_space(t) for t in texts]
    names = [d.name for d in dims]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SweepError(f"--space {twice[0]}: given twice; give each setting once.")
    if not dims:
        raise SweepError("give at least one --space, for example --space rho=0.03:0.5:log.")
    return dims


def suggest(trial: Any, dims: Sequence[Dimension]) -> dict[str, Any]:
    """The settings a trial tries: one value per dimension, drawn by Optuna's sampler."""
    params: dict[str, Any] = {}
    for d in dims:
        if d.kind == "choice":
            params[d.name] = trial.suggest_categorical(d.name, list(d.choices))
        elif d.kind == "int":
            params[d.name] = trial.suggest_int(d.name, int(d.low), int(d.high), log=d.log)
        else:
            params[d.name] = trial.suggest_float(d.name, d.low, d.high, log=d.log)
    return params


# -- where a sweep lives ----------------------------------------------------------------


def check_name(name: str) -> str:
    """A sweep name usable as a file name on every system.

    Raises:
        SweepError: it is empty or holds other characters than letters, digits, - _ .
    """
    if not name or not set(name) <= NAME_CHARS or name.startswith("."):
        raise SweepError(f"sweep name {shown(name)}: use letters, digits, '-', '_' and '.', "
                         "not starting with '.'.")
    return name


def journal_path(root: Path, name: str) -> Path:
    """The journal file of sweep `name` in the runs folder `root`."""
    return Path(root) / SWEEPS_DIR / f"{check_name(name)}.journal"


def list_sweeps(root: Path) -> list[str]:
    """The names of the sweeps in the runs folder `root`."""
    folder = Path(root) / SWEEPS_DIR
    return sorted(p.stem for p in folder.glob("*.journal")) if folder.is_dir() else []


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (made if missing) for the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _storage(root: Path, name: str) -> Any:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = journal_path(root, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep searches, as its study's attributes keep it."""

    name: str
    space: tuple[Dimension, ...]
    trials: int
    metric: str
    base: dict[str, Any]  # the settings every trial starts from

    def attrs(self) -> dict[str, Any]:
        """The study's user attributes that hold this spec (JSON values)."""
        return {"space": [d.to_text() for d in self.space], "trials": self.trials,
                "metric": self.metric, "base": self.base}

    @classmethod
    def from_attrs(cls, name: str, attrs: dict[str, Any]) -> SweepSpec:
        """The spec a study's attributes hold.

        Raises:
            SweepError: the study was not made by `mile-tui sweep`.
        """
        try:
            return cls(name, tuple(parse_space(t) for t in attrs["space"]),
                       int(attrs["trials"]), str(attrs["metric"]), dict(attrs["base"]))
        except (KeyError, TypeError, ValueError):
            raise SweepError(f"sweep {name!r}: its study holds no mile-tui sweep "
                             "(space, trials, metric, base settings).") from None


def base_settings(spec: SweepSpec, root: Path, overrides: Sequence[str] = ()) -> Settings:
    """The settings a worker's trials start from: the sweep's base settings, with this
    worker's runs folder and its `--set` values for machine settings (device, data paths).

    Raises:
        SweepError: an override that would change what the trials train.
    """
    base = build_settings({k: v for k, v in spec.base.items() if k in FIELDS},
                          f"sweep {spec.name!r}'s base settings")
    parsed = dict(parse_override(t) for t in overrides)
    parsed["checkpoint_path"] = str(root)
    for key, value in parsed.items():
        if key in FIELDS and key not in MACHINE_SETTINGS and value != getattr(base, key):
            raise SweepError(
                f"--set {key}: the sweep's trials all train with {key} = "
                f"{getattr(base, key)!r}; a worker may set only: "
                f"{', '.join(sorted(MACHINE_SETTINGS))}.")
    return build_settings(parsed, "--set", base=base)


def _study(root: Path, name: str, create: bool = False) -> Any:
    import optuna

    if not create and not journal_path(root, name).exists():
        known = ", ".join(list_sweeps(root)) or "none"
        raise SweepError(f"no sweep {name!r} in {root} (sweeps there: {known}); start one "
                         "with mile-tui sweep --name NAME --space ...")
    storage = _storage(root, name)  # makes the journal file
    if create:
        return optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                   load_if_exists=True)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise SweepError(f"{journal_path(root, name)}: holds no study {name!r}.") from None


def open_sweep(root: Path, spec: SweepSpec) -> SweepSpec:
    """Make sweep `spec.name` in `root`, or join it if it exists with the same space,
    metric and trials (so every task of a job array may run the same command).

    Raises:
        SweepError: a sweep of that name exists with another space, metric or count.
    """
    require_optuna()
    journal_path(root, spec.name).parent.mkdir(parents=True, exist_ok=True)
    with _locked(_lock_path(root, spec.name)):
        study = _study(root, spec.name, create=True)
        attrs = study.user_attrs
        if not attrs:
            for key, value in spec.attrs().items():
                study.set_user_attr(key, value)
            return spec
    found = SweepSpec.from_attrs(spec.name, attrs)
    theirs = (found.attrs()["space"], found.trials, found.metric)
    if theirs != (spec.attrs()["space"], spec.trials, spec.metric):
        raise SweepError(
            f"sweep {spec.name!r} exists with --space {' --space '.join(theirs[0])} "
            f"--trials {found.trials} --metric {found.metric}; join it with --join "
            f"{spec.name} or pick another --name.")
    return found


def load_spec(root: Path, name: str) -> SweepSpec:
    """The spec of an existing sweep.

    Raises:
        SweepError: no such sweep, or not one made by mile-tui.
    """
    require_optuna()
    if not journal_path(root, name).exists():
        _study(root, name)  # says which sweeps there are
    # Under the draw lock: a sweep being made has its attributes once the lock is free.
    with _locked(_lock_path(root, name)):
        return SweepSpec.from_attrs(name, _study(root, name).user_attrs)


def _lock_path(root: Path, name: str) -> Path:
    return journal_path(root, name).with_suffix(".lock")


# -- workers ----------------------------------------------------------------------------


class WorkerLock:
    """This worker's lock file: held while the process lives, so that others can tell a
    dead worker's trials (its lock can be taken) from a live one's."""

    def __init__(self, root: Path, name: str) -> None:
        folder = journal_path(root, name).with_suffix(".workers")
        folder.mkdir(parents=True, exist_ok=True)
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.path = folder / self.id
        self._fh: IO[bytes] | None = self.path.open("wb")
        fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release(self) -> None:
        """Let the lock go and remove the file (the worker ended normally)."""
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self._fh.close()
            self._fh = None


def worker_alive(folder: Path, worker: str) -> bool:
    """Whether the worker named `worker` still holds its lock in `folder` (a missing file
    means the worker ended and took its trials' outcome with it: not alive)."""
    path = folder / worker
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def reap_lost_trials(root: Path, name: str) -> list[int]:
    """Mark failed the running trials whose worker is dead, queue their parameters again,
    and return their numbers. Called by every worker before it draws a trial.

    The caller must hold the sweep's draw lock (`draw_trial` does), so that two workers
    never queue one lost trial twice.
    """
    from optuna.trial import TrialState

    study = _study(root, name)
    folder = journal_path(root, name).with_suffix(".workers")
    lost = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")
        if not isinstance(worker, str) or worker_alive(folder, worker):
            continue
        storage = study._storage
        storage.set_trial_user_attr(trial._trial_id, "lost",
                                    f"worker {worker} ended without finishing the trial")
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        lost.append(trial.number)
    return lost


def _counted(trial: Any) -> bool:
    """Whether a trial counts towards the sweep's number: done, pruned, running, or failed
    by its own run; not a lost trial (queued again) nor one waiting in the queue."""
    from optuna.trial import TrialState

    if trial.state == TrialState.WAITING:
        return False
    return not (trial.state == TrialState.FAIL and "lost" in trial.user_attrs)


def draw_trial(root: Path, spec: SweepSpec, worker: WorkerLock) -> Any | None:
    """The next trial for this worker, or None when the sweep has all its trials."""
    with _locked(_lock_path(root, spec.name)):
        reap_lost_trials(root, spec.name)
        study = _study(root, spec.name)
        taken = sum(_counted(t) for t in study.get_trials(deepcopy=False))
        if taken >= spec.trials:
            return None
        trial = study.ask()
        trial.set_user_attr("worker", worker.id)
        suggest(trial, spec.space)
        return trial


TrialOutcome = Literal["complete", "pruned", "failed", "stopped"]


@dataclass(frozen=True)
class TrialResult:
    """What one trial did."""

    number: int
    params: dict[str, Any]
    outcome: TrialOutcome
    value: float | None
    run_dir: str | None
    error: str | None = None
    metric: str | None = None  # the metric's name (`auto` resolved)


class _Pruning:
    """A sink that reports each evaluation to the trial and stops a pruned run."""

    def __init__(self, trial: Any, metric: str, control: Control) -> None:
        self.trial, self.metric, self.control = trial, metric, control
        self.best: float | None = None
        self.pruned = False
        self.metric_used: str | None = None
        self.run_dir: str | None = None
        self.generations = 0

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.RunStarted):
            self.run_dir = event.run_dir
            self.generations = int(event.settings.get("epoch_num", 0))
        if not isinstance(event, ev.Evaluated):
            return
        name = self.metric
        if name == AUTO_METRIC:
            name = "map" if "map" in event.metrics else "real_f1"
        self.metric_used = name
        value = event.metrics.get(name)
        if value is None or not math.isfinite(value):
            return
        self.best = value if self.best is None else max(self.best, value)
        self.trial.report(value, event.generation)
        # After the last generation there is nothing left to save by stopping.
        if event.generation < self.generations and self.trial.should_prune():
            self.pruned = True
            self.control.stop()


def _write_tag(run_dir: Path, data: dict[str, Any]) -> None:
    from mile_engine.runstore.files import atomic_write_text

    atomic_write_text(run_dir / SWEEP_FILE, json.dumps(data, indent=1) + "\n")


def read_tag(run_dir: Path) -> dict[str, Any] | None:
    """A run folder's sweep tag (`sweep`, `trial`, `params`, `state`), or None."""
    try:
        data = json.loads((Path(run_dir) / SWEEP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def run_trial(trial: Any, spec: SweepSpec, base: Settings, sinks: Sequence[ev.Sink],
              control: Control) -> TrialResult:
    """Train one trial as an ordinary run and tell the study how it went."""
    from optuna.trial import TrialState

    from mile_engine.runstore.files import CheckpointError
    from mile_engine.session import open_run

    params = dict(trial.params)
    study = trial.study
    pruning = _Pruning(trial, spec.metric, control)
    tag = {"sweep": spec.name, "trial": trial.number, "params": params, "state": "running"}
    try:
        settings = build_settings(params, f"sweep {spec.name!r} trial {trial.number}", base)
        check_checkpoint_path(settings)
        trainer = open_run(settings, [*sinks, pruning], control)
    except (SettingsError, CheckpointError, OSError) as exc:
        trial.set_user_attr("error", str(exc))
        study.tell(trial, state=TrialState.FAIL)
        return TrialResult(trial.number, params, "failed", None, None, str(exc))
    run_dir = Path(trainer.run_dir)
    trial.set_user_attr("run_dir", run_dir.name)
    _write_tag(run_dir, tag)
    ended = trainer.train()
    del trainer
    result: TrialResult
    if pruning.metric_used is not None:
        trial.set_user_attr("metric", pruning.metric_used)
    if ended.status == "failed":
        trial.set_user_attr("error", ended.error or "failed")
        study.tell(trial, state=TrialState.FAIL)
        result = TrialResult(trial.number, params, "failed", pruning.best, str(run_dir),
                             ended.error)
    elif pruning.pruned:
        study.tell(trial, state=TrialState.PRUNED)
        result = TrialResult(trial.number, params, "pruned", pruning.best, str(run_dir))
    elif ended.status == "stopped":
        # Stopped by its user (Ctrl-C, `mile-tui runs stop`): not a result; the trial is
        # queued again, as a lost one is, and this worker ends.
        trial.set_user_attr("lost", "stopped before it finished")
        study.tell(trial, state=TrialState.FAIL)
        study.enqueue_trial(params, user_attrs={"retry_of": trial.number})
        result = TrialResult(trial.number, params, "stopped", pruning.best, str(run_dir))
    elif pruning.best is None:
        trial.set_user_attr("error", f"no evaluation gave {spec.metric}")
        study.tell(trial, state=TrialState.FAIL)
        result = TrialResult(trial.number, params, "failed", None, str(run_dir),
                             f"no evaluation gave {spec.metric}")
    else:
        study.tell(trial, pruning.best)
        result = TrialResult(trial.number, params, "complete", pruning.best, str(run_dir))
    result = dataclasses.replace(result, metric=pruning.metric_used)
    with contextlib.suppress(OSError):
        _write_tag(run_dir, {**tag, "state": result.outcome, "value": result.value,
                             "metric": result.metric})
    return result


def run_worker(
    root: Path,
    spec: SweepSpec,
    base: Settings,
    sinks: Sequence[ev.Sink] = (),
    new_control: Callable[[], Control] = Control,
    on_trial: Callable[[int, dict[str, Any]], None] | None = None,
    on_result: Callable[[TrialResult], None] | None = None,
    pruner: Any = None,
) -> list[TrialResult]:
    """Draw and train trials of the sweep until it has all of them (or a trial is stopped
    by its user). Returns what this worker's trials did.

    Args:
        root: the runs folder, where the sweep's journal lives.
        spec: the sweep (`open_sweep` or `load_spec`).
        base: the settings each trial starts from (`base_settings`).
        sinks: receivers of each trial's events (a console renderer).
        new_control: makes the control object of each trial (a caller that turns
            signals into stops points its handler at the newest one).
        on_trial, on_result: told when a trial starts (number, parameters) and ends.
        pruner: an Optuna pruner (default: the median of the earlier trials at the same
            generation, once two trials have ended, from the second generation on).
    """
    import optuna

    pruner = pruner or optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2)
    worker = WorkerLock(root, spec.name)
    results: list[TrialResult] = []
    try:
        while True:
            trial = draw_trial(root, spec, worker)
            if trial is None:
                break
            trial.study.pruner = pruner
            if on_trial is not None:
                on_trial(trial.number, dict(trial.params))
            result = run_trial(trial, spec, base, sinks, new_control())
            results.append(result)
            if on_result is not None:
                on_result(result)
            if result.outcome == "stopped":
                break
    finally:
        worker.release()
    return results


# -- reports ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialRow:
    """One trial as `sweep show` lists it."""

    number: int
    state: str  # complete, pruned, running, failed, waiting
    value: float | None
    params: dict[str, Any]
    run_dir: str | None
    note: str = ""


@dataclass(frozen=True)
class SweepReport:
    """A sweep's state: its trials best first, the parameters' importances, and the
    best trial's settings as a `mile.toml` fragment."""

    spec: SweepSpec
    trials: list[TrialRow]
    importances: dict[str, float] | None
    importance_note: str
    best: TrialRow | None
    fragment: str


def _row(trial: Any) -> TrialRow:
    state = trial.state.name.lower()
    note = str(trial.user_attrs.get("lost") or trial.user_attrs.get("error") or "")
    value = trial.value if trial.value is not None else (
        max(trial.intermediate_values.values()) if trial.intermediate_values else None)
    return TrialRow(trial.number, state, value, dict(trial.params),
                    trial.user_attrs.get("run_dir"), note)


def toml_fragment(params: dict[str, Any], header: Sequence[str] = ()) -> str:
    """Settings as a `mile.toml` fragment: each key in its table, tables in file order."""
    import tomlkit

    lines = [f"# {h}" for h in header]
    for group in GROUPS:
        keys = [k for k in FIELDS if k in params and FIELDS[k].metadata["group"] == group]
        if keys:
            lines.append(f"[{group}]")
            lines += [f"{k} = {tomlkit.item(params[k]).as_string()}" for k in keys]
    return "\n".join(lines) + "\n"


def sweep_report(root: Path, name: str, top: int = 10) -> SweepReport:
    """What sweep `name` in `root` has found so far.

    Raises:
        SweepError: no such sweep.
    """
    import optuna

    spec = load_spec(root, name)
    study = _study(root, name)
    trials = study.get_trials(deepcopy=False)
    rows = sorted((_row(t) for t in trials if t.state.name != "WAITING"),
                  key=lambda r: (r.state != "complete", -(r.value if r.value is not None
                                                          else -math.inf), r.number))
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    importances: dict[str, float] | None = None
    note = ""
    if len(complete) < 2:
        note = f"importances need 2 or more completed trials ({len(complete)} so far)"
    else:
        try:
            importances = optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError) as exc:
            note = f"importances cannot be computed yet: {exc}"
    best = rows[0] if rows and rows[0].state == "complete" else None
    fragment = ""
    if best is not None:
        metric = next((t.user_attrs.get("metric") for t in complete
                       if t.number == best.number), None) or spec.metric
        fragment = toml_fragment(best.params, [
            f"best of sweep {name}: trial {best.number}, {metric} {best.value:.4f}"
            + (f", run {best.run_dir}" if best.run_dir else "")])
    return SweepReport(spec, rows[:top], importances, note, best, fragment)


def sweep_of(run_dir: Path) -> str | None:
    """The name of the sweep a run folder belongs to, or None (for the runs list)."""
    tag = read_tag(run_dir)
    name = tag.get("sweep") if tag else None
    return name if isinstance(name, str) else None
