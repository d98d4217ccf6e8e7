"""A training run's folder: one owner, a backup that is one unit, no guessing.

`scan_keras.training.train` keeps everything of a run in one folder, which
holds the only copy of its best model. This module makes that folder safe
against kills, full disks and a second process:

- `RunLock`: an OS file lock on `OUT/.lock`, held for the whole run and
  released by the kernel when the process ends, however it ends, so a
  killed run never leaves a stale lock. A second run on the folder stops
  at once, naming the process that holds it.
- `RunBackup`: after every epoch, the weights with the optimizer's state
  go to `backup/epoch-<n>.weights.h5`, and only then `backup/manifest.json`
  names that file and the epoch. The manifest is written last and whole
  (`scan_keras.atomic`): a resume reads weights and epoch counter of the
  same epoch, or none.
- `restore`: decides how a run starts, from what the folder holds: a
  fresh run, a resume at the manifest's epoch, or an error that says what
  is there and offers the choices (`restart`, or resume from the best
  model), never a silent start from scratch on top of finished epochs.
- `trim_log`: on resume, drops the log rows of epochs the backup does not
  cover, so that every epoch appears once.
"""

import contextlib
import csv
import os
import shutil

import keras

from scan_keras.atomic import atomic_path, read_json, write_json

MANIFEST = "manifest.json"
LOCK = ".lock"


class RunLock:
    """An exclusive lock on a run folder, for a `with` block.

    Raises:
        BlockingIOError: another process holds the folder.
    """

    def __init__(self, out_dir):
        self.path = os.path.join(out_dir, LOCK)
        self._file = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # Windows: no lock, as before
            return self
        while True:
            handle = open(self.path, "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                handle.close()
                raise BlockingIOError(
                    f"{os.path.dirname(self.path)} is in use by another training "
                    f"process (PID {holder}): wait for it to end, or stop it, "
                    "before starting this run again."
                ) from None
            # The owner before us removes the file as it ends: a lock taken
            # on that removed file is no lock; open the new one.
            try:
                same = os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            handle.close()
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle
        return self

    def __exit__(self, *exc):
        if self._file is not None:
            # Removed while still held, so no one locks it in between; a
            # killed process leaves it, unlocked, for the next to take.
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)
            self._file.close()
            self._file = None
        return False


def _weights_name(epoch):
    return f"epoch-{epoch}.weights.h5"


class RunBackup(keras.callbacks.Callback):
    """Writes the state of the run after every epoch (see the module docstring).

    Args:
        backup_dir: the backup folder (`OUT/backup`).
    """

    def __init__(self, backup_dir):
        super().__init__()
        self.backup_dir = backup_dir

    def on_epoch_end(self, epoch, logs=None):
        os.makedirs(self.backup_dir, exist_ok=True)
        name = _weights_name(epoch + 1)
        with atomic_path(os.path.join(self.backup_dir, name)) as tmp:
            self.model.save_weights(tmp)
        write_json(
            os.path.join(self.backup_dir, MANIFEST), {"epoch": epoch + 1, "weights": name}
        )
        for other in os.listdir(self.backup_dir):
            if other.endswith(".weights.h5") and other != name:
                os.remove(os.path.join(self.backup_dir, other))


def read_manifest(backup_dir):
    """`(epoch, weights path)` of the backup, or None where there is none.

    Raises:
        ValueError: the manifest is unreadable or names a missing file.
    """
    path = os.path.join(backup_dir, MANIFEST)
    if not os.path.exists(path):
        return None
    manifest = read_json(path, "the backup's manifest")
    epoch = manifest.get("epoch") if isinstance(manifest, dict) else None
    weights = manifest.get("weights") if isinstance(manifest, dict) else None
    if not isinstance(epoch, int) or epoch < 1 or not isinstance(weights, str):
        raise ValueError(
            f"{path}: the backup's manifest must hold a positive 'epoch' and "
            f"a 'weights' file name. Received: {str(manifest)[:120]}"
        )
    weights = os.path.join(backup_dir, weights)
    if not os.path.isfile(weights):
        raise ValueError(f"{path} names {weights}, which does not exist.")
    return epoch, weights


def _log_rows(log_path):
    """`(fields, [(epoch, row, complete)])` of the log's parsable rows."""
    with open(log_path, newline="") as f:
        reader = csv.DictReader(f)
        rows = []
        for row in reader:
            try:
                epoch = int(row["epoch"])
            except (KeyError, TypeError, ValueError):
                continue
            # A row cut short by a kill lacks fields (None values).
            rows.append((epoch, row, None not in row.values() and None not in row))
        return reader.fieldnames, rows


def log_epochs(log_path):
    """The 0-based epochs the log has rows for (unparsable rows skipped)."""
    if not os.path.exists(log_path):
        return []
    return [epoch for epoch, _, _ in _log_rows(log_path)[1]]


def trim_log(log_path, start_epoch):
    """Keeps the header and the rows of epochs before `start_epoch`.

    A row cut short by a kill, or of an epoch the backup does not cover,
    is dropped; the file is rewritten whole.
    """
    if not os.path.exists(log_path):
        return
    fields, rows = _log_rows(log_path)
    kept = [row for epoch, row, complete in rows if complete and epoch < start_epoch]
    with atomic_path(log_path) as tmp:
        with open(tmp, "w", newline="") as f:
            if fields:
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows(kept)


def _build_optimizer(model):
    # Its variables must exist before a backup's or a model's values go in.
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


def _copy_state(model, source):
    """Weights and optimizer variables of `source` into `model`."""
    model.set_weights(source.get_weights())
    if source.optimizer is not None and model.optimizer is not None:
        _build_optimizer(model)
        for target, value in zip(model.optimizer.variables, source.optimizer.variables):
            target.assign(value)


def restore(model, out_dir, backup_dir, log_path, best_path, resume_from=None):
    """Restores the run's state into `model`; returns the epoch to start at.

    Args:
        model: the compiled, built model of the run.
        out_dir: the run folder (for messages).
        backup_dir, log_path, best_path: the run's backup folder, log and
            best model.
        resume_from: None (the backup, or a fresh start where nothing was
            finished), `"restart"` (start again from epoch 0, discarding
            the backup, the log and the best model), or `"best"` (resume
            from the best model and its epoch).

    Raises:
        ValueError: the backup is missing or unreadable while the log
            shows finished epochs, and `resume_from` says nothing.
    """
    if resume_from == "restart":
        shutil.rmtree(backup_dir, ignore_errors=True)
        for path in (log_path, best_path, f"{best_path}.json"):
            if os.path.exists(path):
                os.remove(path)
        return 0
    if resume_from == "best":
        record = read_json(f"{best_path}.json", "the best model's record")
        best = keras.saving.load_model(best_path)
        _copy_state(model, best)
        epoch = int(record["epoch"])
        trim_log(log_path, epoch)
        return epoch
    problem, start = None, 0
    try:
        manifest = read_manifest(backup_dir)
    except ValueError as err:
        manifest, problem = None, str(err)
    if manifest is not None:
        epoch, weights = manifest
        _build_optimizer(model)
        try:
            model.load_weights(weights)
        except Exception as err:  # h5py and Keras raise several kinds
            problem = f"{weights} cannot be read ({type(err).__name__}: {err})"
        else:
            start = epoch
    # The log gets an epoch's row just before its backup is written, so a
    # kill leaves at most the row of epoch `start` beyond the backup; more
    # means the backup was lost.
    unexplained = sorted({e for e in log_epochs(log_path) if e > start})
    if problem is None and not unexplained:
        trim_log(log_path, start)
        return start
    what = problem or (
        f"{backup_dir} holds no backup" if manifest is None
        else f"{backup_dir} holds the backup of epoch {start}"
    )
    done = (
        f"{log_path} records epochs up to {unexplained[-1] + 1}" if unexplained else ""
    )
    raise ValueError(
        f"Cannot resume {out_dir}: {what}"
        + (f", while {done}" if done else "")
        + ". Start again with --restart (discards this run's log, backup and "
        "best model) or resume from the best model with --resume-from-best."
    )
