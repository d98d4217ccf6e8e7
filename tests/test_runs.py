"""Runs that survive kill -9, lost files and a second process.

The kill harness trains in a real subprocess (`scan-keras train`), watches
the output folder and sends SIGKILL at the k-th change it sees, for k
across the run; after every kill every model file must load and every JSON
parse; started again until it finishes, the run must give the log and the
weights of an uninterrupted run.
"""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from helpers import once

from scan_keras.atomic import TMP_PREFIX
from scan_keras.data import write_toy_precomp
from scan_keras.runs import MANIFEST
from scan_keras.training import BACKUP, BEST_MODEL, LAST_MODEL, LOG, train

# Training runs, subprocesses or the site build: left out of the fast suite
# (`pytest -m "not slow"`).
pytestmark = [pytest.mark.once, pytest.mark.slow]

EPOCHS = 3
ARGS = ["--preset", "f30k_t2i_avg", "--epochs", str(EPOCHS), "--batch-size", "16",
        "--embed-size", "16", "--word-dim", "8", "--seed", "1", "--workers", "0",
        "--tokenizer", "regex"]
KWARGS = dict(epochs=EPOCHS, batch_size=16, seed=1, workers=0, verbose=0,
              tokenizer="regex", embed_size=16, word_dim=8)


# Kills, locks and subprocesses test the folder's mechanics, which do not
# depend on the backend: they run `once`; the in-process tests of saved
# weights run under every backend.


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("toy"))
    write_toy_precomp(path, n_images={"train": 48, "dev": 12, "test": 12}, seed=2)
    return path


@pytest.fixture(scope="module")
def straight(data_dir, tmp_path_factory):
    """An uninterrupted run: its folder."""
    out = str(tmp_path_factory.mktemp("runs") / "straight")
    train("f30k_t2i_avg", data_dir, out, **KWARGS)
    return out


def command(data_dir, out, *extra):
    return [sys.executable, "-m", "scan_keras", "train", "--data-dir", data_dir,
            "--out", out, *ARGS, *extra]


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def snapshot(folder):
    """{relative path: (size, mtime_ns)} of every file under `folder`."""
    state = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            try:
                info = os.stat(path)
            except FileNotFoundError:
                continue
            state[os.path.relpath(path, folder)] = (info.st_size, info.st_mtime_ns)
    return state


def run_and_kill(cmd, out, k, timeout=300):
    """Runs `cmd`; SIGKILLs it at the k-th change seen in `out`.

    Returns the exit code (negative: killed)."""
    log = open(os.path.join(os.path.dirname(out), "stderr.txt"), "w")
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=_env())
    seen, changes, started = snapshot(out), 0, time.monotonic()
    while process.poll() is None:
        now = snapshot(out)
        if now != seen:
            changes += 1
            seen = now
            if changes >= k:
                process.send_signal(signal.SIGKILL)
                process.wait()
                break
        if time.monotonic() - started > timeout:
            process.kill()
            raise AssertionError("the training run did not end")
        time.sleep(0.002)
    log.close()
    return process.returncode


def last_stderr(out):
    return open(os.path.join(os.path.dirname(out), "stderr.txt")).read()[-3000:]


def check_folder(out):
    """Every model file loads, every JSON parses, the manifest is whole."""
    for name in os.listdir(out):
        path = os.path.join(out, name)
        if name.startswith(TMP_PREFIX):  # a killed write's, hidden, removed on restart
            continue
        if name.endswith(".json"):
            json.load(open(path))
        if name.endswith(".keras"):
            keras.saving.load_model(path)
    manifest = os.path.join(out, BACKUP, MANIFEST)
    if os.path.exists(manifest):
        names = json.load(open(manifest))
        assert os.path.isfile(os.path.join(out, BACKUP, names["weights"]))


def log_epochs(out):
    with open(os.path.join(out, LOG)) as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


@once
def test_killed_at_every_write_the_run_ends_as_an_uninterrupted_one(
    data_dir, straight, tmp_path
):
    out = str(tmp_path / "killed")
    cmd = command(data_dir, out)
    kills = 0
    # Kills after k changes seen, k varied, so that they land on the first
    # files, best-model writes, log rows and backups; then the run ends.
    for k in (1, 3, 5, 2, 7, 4, 6):
        code = run_and_kill(cmd, out, k)
        if code == 0 or os.path.exists(os.path.join(out, LAST_MODEL)):
            break
        assert code == -signal.SIGKILL, last_stderr(out)
        kills += 1
        check_folder(out)
    if not os.path.exists(os.path.join(out, LAST_MODEL)):
        assert run_and_kill(cmd, out, k=10_000) == 0, last_stderr(out)
    assert kills >= 5
    # Finished: started again, it says so and changes nothing.
    assert run_and_kill(cmd, out, k=10_000) == 2
    assert "finished run" in last_stderr(out)
    assert log_epochs(out) == list(range(EPOCHS))
    assert not os.path.exists(os.path.join(out, BACKUP))
    assert not [n for n in os.listdir(out) if n.startswith(TMP_PREFIX) or n == ".lock"]
    done = keras.saving.load_model(os.path.join(out, LAST_MODEL))
    expected = keras.saving.load_model(os.path.join(straight, LAST_MODEL))
    for a, b in zip(done.get_weights(), expected.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _interrupted(data_dir, tmp_path, name, epochs_done=2):
    """A run folder as a kill after `epochs_done` epochs leaves it."""
    out = str(tmp_path / name)
    train("f30k_t2i_avg", data_dir, out, **dict(KWARGS, epochs=epochs_done))
    # What the finished short run removed, put back as a kill would leave it.
    os.remove(os.path.join(out, LAST_MODEL))
    run = json.load(open(os.path.join(out, "run.json")))
    run["epochs"] = EPOCHS
    json.dump(run, open(os.path.join(out, "run.json"), "w"))
    return out


def test_a_lost_backup_stops_with_the_choices(data_dir, straight, tmp_path):
    out = _interrupted(data_dir, tmp_path, "lost")
    # The short run finished, so its backup is gone: the log shows 2 epochs.
    with pytest.raises(ValueError, match="holds no backup.*epochs up to 2.*--restart.*--resume-from-best"):
        train("f30k_t2i_avg", data_dir, out, **KWARGS)
    assert log_epochs(out) == [0, 1]
    # Resuming from the best model trains the epochs after it, once each.
    best_epoch = json.load(open(os.path.join(out, BEST_MODEL + ".json")))["epoch"]
    train("f30k_t2i_avg", data_dir, out, resume_from="best", **KWARGS)
    assert log_epochs(out) == list(range(EPOCHS))
    assert best_epoch in (1, 2)
    # Restarting trains from scratch: the uninterrupted run's weights.
    os.remove(os.path.join(out, LAST_MODEL))
    shutil.rmtree(os.path.join(out, BACKUP), ignore_errors=True)
    train("f30k_t2i_avg", data_dir, out, resume_from="restart", **KWARGS)
    assert log_epochs(out) == list(range(EPOCHS))
    done = keras.saving.load_model(os.path.join(out, LAST_MODEL))
    expected = keras.saving.load_model(os.path.join(straight, LAST_MODEL))
    for a, b in zip(done.get_weights(), expected.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_truncated_backup_is_named(data_dir, straight, tmp_path):
    out = str(tmp_path / "truncated")
    shutil.copytree(straight, out)
    # Make an unfinished run with a backup, then truncate its weights.
    os.remove(os.path.join(out, LAST_MODEL))
    os.makedirs(os.path.join(out, BACKUP))
    weights = os.path.join(out, BACKUP, "epoch-2.weights.h5")
    with open(weights, "wb") as f:
        f.write(b"\x89HDF\r\n")
    json.dump({"epoch": 2, "weights": "epoch-2.weights.h5"},
              open(os.path.join(out, BACKUP, MANIFEST), "w"))
    done = subprocess.run(command(data_dir, out), env=_env(), capture_output=True, text=True)
    assert done.returncode == 2
    assert weights in done.stderr and "--restart" in done.stderr
    assert "Traceback" not in done.stderr


@once
def test_a_second_run_on_the_folder_stops_at_once(data_dir, tmp_path):
    out = str(tmp_path / "busy")
    first = subprocess.Popen(command(data_dir, out), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=_env())
    try:
        deadline = time.monotonic() + 120
        while not os.path.exists(os.path.join(out, "run.json")):
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.01)
        started = time.monotonic()
        second = subprocess.run(command(data_dir, out), env=_env(), capture_output=True,
                                text=True)
        assert second.returncode == 2, second.stderr[-2000:]
        # Either the first still held the folder, or it had finished its run
        # (its process may still be exiting) before the second looked.
        if "holds a finished run" not in second.stderr:
            assert f"PID {first.pid}" in second.stderr and out in second.stderr
            assert time.monotonic() - started < 60
    finally:
        first.wait(timeout=300)
    assert first.returncode == 0
    assert log_epochs(out) == list(range(EPOCHS))


def test_settings_and_inputs_checked_before_training(data_dir, tmp_path):
    out = _interrupted(data_dir, tmp_path, "changed")
    vocab = tmp_path / "vocab.json"
    shutil.copy(os.path.join(out, "vocab.json"), vocab)
    with pytest.raises(ValueError, match="vocab_path"):
        train("f30k_t2i_avg", data_dir, out, vocab_path=str(vocab), **KWARGS)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        train("f30k_t2i_avg", data_dir, str(a_file), **KWARGS)
    # Dev features of another dimension: refused before any step.
    other = tmp_path / "other"
    shutil.copytree(data_dir, other)
    dev = np.load(other / "dev_ims.npy")
    np.save(other / "dev_ims.npy", dev[..., :-1])
    with pytest.raises(ValueError, match="dev features.*same feature extractor"):
        train("f30k_t2i_avg", str(other), str(tmp_path / "dims"), **KWARGS)
    assert not os.path.exists(tmp_path / "dims")


class FillTheDisk(keras.callbacks.Callback):
    """After the first epoch, fills the filesystem of `path` to the last byte."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            with open(self.path, "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()
                except OSError:
                    pass
            with open(self.path, "ab") as f:  # the last few bytes too
                try:
                    while True:
                        f.write(b"\0")
                        f.flush()
                except OSError:
                    pass


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root): " + done.stderr.decode()[:200])
    yield mount
    # Lazily: a file still open there must not leave the mount behind.
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_keeps_the_best_model_and_resumes(data_dir, straight, small_disk):
    out = str(small_disk / "run")
    filler = str(small_disk / "filler")
    with pytest.raises(OSError, match=f"{out}.*start the same command again"):
        train("f30k_t2i_avg", data_dir, out, callbacks=[FillTheDisk(filler)], **KWARGS)
    check_folder(out)
    record = json.load(open(os.path.join(out, BEST_MODEL + ".json")))
    assert record["epoch"] == 1
    os.remove(filler)  # space freed
    train("f30k_t2i_avg", data_dir, out, **KWARGS)
    assert log_epochs(out) == list(range(EPOCHS))
    done = keras.saving.load_model(os.path.join(out, LAST_MODEL))
    expected = keras.saving.load_model(os.path.join(straight, LAST_MODEL))
    for a, b in zip(done.get_weights(), expected.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_byte_order_mark_is_dropped_with_a_note(tmp_path):
    from scan_keras.data import load_split, write_split

    write_split(str(tmp_path), "test", np.zeros((1, 2, 3), "float32"),
                ["a dog runs"] * 5)
    path = tmp_path / "test_caps.txt"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    with pytest.warns(UserWarning, match="byte-order mark"):
        split = load_split(str(tmp_path), "test")
    assert split.captions[0] == "a dog runs"


def test_convert_refuses_weights_that_are_not_finite(tmp_path):
    pytest.importorskip("torch")
    import test_convert

    from scan_keras.convert import load_official_checkpoint

    opt = test_convert.make_options()
    encoders = test_convert.make_encoders(opt)
    state = encoders[1].state_dict()
    state["rnn.weight_hh_l0"][3, 5] = float("nan")
    path = test_convert.save_checkpoint(tmp_path / "m.pth.tar", encoders, opt,
                                        text_state=state)
    with pytest.raises(ValueError, match="rnn.weight_hh_l0.*1 values that are NaN"):
        load_official_checkpoint(path)


def _backup_of_the_end(straight, out):
    """A folder as a kill after the last epoch's backup, before the last model."""
    shutil.copytree(straight, out)
    last = keras.saving.load_model(os.path.join(out, LAST_MODEL))
    os.remove(os.path.join(out, LAST_MODEL))
    os.makedirs(os.path.join(out, BACKUP))
    name = f"epoch-{EPOCHS}.weights.h5"
    last.save_weights(os.path.join(out, BACKUP, name))
    json.dump({"epoch": EPOCHS, "weights": name},
              open(os.path.join(out, BACKUP, MANIFEST), "w"))
    return last


def test_killed_before_the_last_model_it_finishes_without_training(data_dir, straight, tmp_path):
    out = str(tmp_path / "end")
    last = _backup_of_the_end(straight, out)
    _, history = train("f30k_t2i_avg", data_dir, out, **KWARGS)
    assert history.history.get("loss", []) == []  # no epoch trained again
    assert log_epochs(out) == list(range(EPOCHS))
    assert not os.path.exists(os.path.join(out, BACKUP))
    done = keras.saving.load_model(os.path.join(out, LAST_MODEL))
    for a, b in zip(done.get_weights(), last.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_lost_manifest_is_a_lost_backup(data_dir, straight, tmp_path):
    out = str(tmp_path / "manifest")
    _backup_of_the_end(straight, out)
    os.remove(os.path.join(out, BACKUP, MANIFEST))  # the weights file stays
    with pytest.raises(ValueError, match="holds no backup.*epochs up to 3.*--restart"):
        train("f30k_t2i_avg", data_dir, out, **KWARGS)
    assert log_epochs(out) == list(range(EPOCHS))  # nothing trained, nothing lost
