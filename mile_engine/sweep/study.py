"""Where a sweep lives and how workers share it: the journal file, the spec kept in the
study, the lock under which trials are drawn, and the lost trials of dead workers."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from mile_engine.config.loader import parse_override
from mile_engine.config.schema import FIELDS, Settings
from mile_engine.config.validation import build_settings, shown
from mile_engine.sweep.space import Dimension, SweepError, parse_space, suggest

SWEEP_HINT = "pip install 'mile-tui[sweep]'"
SWEEPS_DIR = "sweeps"
# Settings a joining worker may set for its own machine (devices, data paths, speed):
# they do not change what a trial trains.
MACHINE_SETTINGS = frozenset({
    "device", "precision", "compile", "num_workers", "decode", "log_every",
    "max_checkpoint_num", "tensorboard", "data_path", "val_path", "real_path", "mnist_path",
    "val_labels_path", "checkpoint_path",
})
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def require_optuna() -> None:
    """Check that Optuna can be imported.

    Raises:
        SweepError: naming the package to install.
    """
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise SweepError(f"Optuna is not installed; {SWEEP_HINT}.") from None


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


def study_of(root: Path, name: str, create: bool = False) -> Any:
    """The Optuna study of sweep `name` (made with `create`).

    Raises:
        SweepError: no such sweep (and not `create`).
    """
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
        study = study_of(root, spec.name, create=True)
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
        study_of(root, name)  # says which sweeps there are
    # Under the draw lock: a sweep being made has its attributes once the lock is free.
    with _locked(_lock_path(root, name)):
        return SweepSpec.from_attrs(name, study_of(root, name).user_attrs)


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

    study = study_of(root, name)
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
        study = study_of(root, spec.name)
        taken = sum(_counted(t) for t in study.get_trials(deepcopy=False))
        if taken >= spec.trials:
            return None
        trial = study.ask()
        trial.set_user_attr("worker", worker.id)
        suggest(trial, spec.space)
        return trial

