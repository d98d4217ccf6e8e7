"""The paper's training recipe on a precomputed-feature folder.

`train` is what `scan-keras train` runs: Adam as PyTorch steps it, with
gradients clipped to a global norm of 2.0 (`scan_keras.optimizers`), the
step learning-rate schedule, batches of 128
matching pairs, validation rsum after every epoch keeping the best model,
and a run that resumes where it stopped when it is started again.

An output folder holds:

| file | what |
| --- | --- |
| `run.json` | the run's settings; a restart must use the same |
| `vocab.json` | the vocabulary (also stored inside the models) |
| `model_best.keras` (+ `.json`) | the best model by validation rsum, and its recalls |
| `model_last.keras` | the model after the last epoch: the run has finished |
| `log.csv` | loss, learning rate and validation recalls per epoch |
| `backup/` | the state of an unfinished run: `manifest.json` names the epoch and its weights file (weights and optimizer) |
| `.lock` | held by the process training in the folder (`scan_keras.runs`) |

Every file is written whole or not at all (`scan_keras.atomic`), so a run
killed at any moment resumes exactly, and a second run on the same folder
stops at once.
"""

import os
import shutil

import keras
import numpy as np

from scan_keras.atomic import read_json, remove_temporaries, save_model, write_json
from scan_keras.callbacks import (
    EpochShuffle,
    HardestNegativeWarmup,
    RetrievalValidation,
    step_decay,
)
from scan_keras.data import PairBatches, Vocabulary, load_split
from scan_keras.data.reference_vocab import load_reference_vocabulary
from scan_keras.data.vocabulary import check_tokenizer
from scan_keras.models import SCAN
from scan_keras.optimizers import get_optimizer
from scan_keras.presets import get_preset
from scan_keras.runs import LOCK, RunBackup, RunLock, restore

BEST_MODEL = "model_best.keras"
LAST_MODEL = "model_last.keras"
RUN_CONFIG = "run.json"
VOCAB = "vocab.json"
LOG = "log.csv"
BACKUP = "backup"


def compile_scan(
    model, learning_rate=2e-4, grad_clip=2.0, optimizer="torch_adam", **compile_kwargs
):
    """Compiles `model` with the reference code's optimizer.

    Args:
        model: a `SCAN` (its loss is its own).
        learning_rate: Adam's learning rate.
        grad_clip: the global norm the gradients of all weights together
            are clipped to, as `torch.nn.utils.clip_grad_norm_` does.
        optimizer: `"torch_adam"` (the steps of `torch.optim.Adam`, which
            the reference code trains with), `"torch_adam_legacy"` or
            `"keras_adam"`; see `scan_keras.optimizers.get_optimizer`.
        **compile_kwargs: more `model.compile` arguments.

    Returns:
        The model, compiled.
    """
    model.compile(
        optimizer=get_optimizer(optimizer, learning_rate, grad_clip), **compile_kwargs
    )
    return model


def load_vocabulary(data_dir, vocab_path=None, min_count=4, tokenizer=None):
    """The vocabulary of a dataset folder.

    `vocab_path` if given (for example the released `f30k_precomp_vocab.json`,
    or the reference's pickled `Vocabulary`, read as nltk-tokenized),
    else `vocab.json` in `data_dir` if present, else one built from the
    train and dev captions with words seen at least `min_count` times.
    `tokenizer` is that of a built vocabulary, or of a file naming none
    (see `scan_keras.data.vocabulary`).
    """
    if vocab_path is None:
        candidate = os.path.join(data_dir, VOCAB)
        if os.path.exists(candidate):
            vocab_path = candidate
    if vocab_path is not None and str(vocab_path).endswith((".pkl", ".pickle")):
        # The reference's pickled Vocabulary, read without running its code.
        return load_reference_vocabulary(vocab_path, tokenizer=tokenizer or "nltk")
    if vocab_path is not None:
        return Vocabulary.load(vocab_path, tokenizer=tokenizer)
    captions = []
    for split in ("train", "dev"):
        captions += load_split(data_dir, split).captions
    return Vocabulary.build(captions, min_count=min_count, tokenizer=tokenizer)


def _check_out_dir(out_dir, settings):
    """Decides between a new run and a resumed one; returns True to resume."""
    config_path = os.path.join(out_dir, RUN_CONFIG)
    if not os.path.exists(config_path):
        if os.path.isdir(out_dir) and set(os.listdir(out_dir)) - {LOCK, BACKUP}:
            raise ValueError(
                f"The output folder {out_dir} is not empty and holds no "
                f"{RUN_CONFIG}: choose a new or empty folder."
            )
        return False
    if os.path.exists(os.path.join(out_dir, LAST_MODEL)):
        raise ValueError(
            f"The output folder {out_dir} holds a finished run "
            f"({LAST_MODEL}): choose a new folder to train again."
        )
    previous = read_json(config_path, "the run's settings")
    # Runs written before these were settings: Keras' Adam, and a vocabulary
    # from the folder, its tokenizer the regex.
    previous.setdefault("optimizer", "keras_adam")
    previous.setdefault("vocab_path", None)
    previous.setdefault("tokenizer", None)
    previous.setdefault("img_dim", settings["img_dim"])
    if previous != settings:
        changed = sorted(
            k for k in set(previous) | set(settings)
            if previous.get(k) != settings.get(k)
        )
        raise ValueError(
            f"{out_dir} holds an unfinished run with other settings "
            f"({', '.join(changed)}); resume it with the same settings or "
            "choose a new folder."
        )
    return True


def train(
    preset,
    data_dir,
    out_dir,
    epochs=None,
    batch_size=None,
    vocab_path=None,
    val_split="dev",
    val_images=1000,
    seed=0,
    verbose="auto",
    callbacks=None,
    pad_to_multiple=8,
    workers=4,
    model_class=SCAN,
    optimizer="torch_adam",
    tokenizer=None,
    resume_from=None,
    **model_overrides,
):
    """Trains SCAN with a preset's recipe; resumes an interrupted run.

    Args:
        preset: a `Preset` or its name, such as `"f30k_t2i_avg"`.
        data_dir: a folder in the precomputed layout (`train_ims.npy`,
            `train_caps.txt`, `dev_ims.npy`, `dev_caps.txt`).
        out_dir: the run's folder (see the module docstring). Starting
            `train` again on the folder of an interrupted run resumes it
            at the last completed epoch.
        epochs: number of epochs (the preset's by default).
        batch_size: pairs per batch (the preset's: 128).
        vocab_path: a vocabulary JSON; see `load_vocabulary`.
        val_split: the split validated after every epoch.
        val_images: validate on the split's first `val_images` images, as
            the reference code does (1000).
        seed: seeds the weights and the shuffling.
        verbose: Keras' `fit` verbosity.
        callbacks: more Keras callbacks, run after the recipe's.
        pad_to_multiple: pad each batch's captions to a multiple of this
            many tokens, so that a compiled train step sees few shapes.
        workers: threads preparing batches ahead of the train step.
        model_class: the model trained, `SCAN` or a subclass with the same
            constructor and `from_preset`, such as the baseline
            `scan_keras.baselines.GlobalEmbedding`.
        optimizer: the optimizer's name, see `compile_scan`.
        tokenizer: the tokenizer of a vocabulary built for the run (see
            `load_vocabulary`); a resumed run keeps its own.
        resume_from: where a run whose backup is missing or unreadable
            starts again: `"restart"` (from scratch) or `"best"` (from the
            best model); None stops with an error that offers both.
        **model_overrides: `SCAN` arguments replacing the preset's, such
            as `embed_size=64` for a quick run.

    Returns:
        `(model, history)`: the model after the last epoch and the Keras
        `History` of this call.
    """
    preset = get_preset(preset) if isinstance(preset, str) else preset
    epochs = preset.num_epochs if epochs is None else epochs
    batch_size = preset.batch_size if batch_size is None else batch_size
    # Unknown names fail before any file is read or written.
    get_optimizer(optimizer)
    if tokenizer is not None:
        check_tokenizer(tokenizer)
    if resume_from not in (None, "restart", "best"):
        raise ValueError(
            "Expected `resume_from` to be None, 'restart' or 'best'. "
            f"Received: resume_from={resume_from!r}"
        )
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"The output folder {out_dir} is a file: give a folder.")

    # Every split the run reads, checked against each other before any step.
    train_split = load_split(data_dir, "train")
    val = load_split(data_dir, val_split)
    if val.img_dim != train_split.img_dim:
        raise ValueError(
            f"The {val_split} features of {data_dir} have {val.img_dim} "
            f"dimensions, the train features {train_split.img_dim}: both "
            "splits must come from the same feature extractor."
        )
    settings = {
        "preset": preset.name,
        "model": model_class.__name__,
        "data_dir": os.path.abspath(data_dir),
        "img_dim": train_split.img_dim,
        "epochs": epochs,
        "batch_size": batch_size,
        "val_split": val_split,
        "val_images": val_images,
        "seed": seed,
        "optimizer": optimizer,
        "vocab_path": None if vocab_path is None else os.path.abspath(vocab_path),
        "tokenizer": tokenizer,
        "model_overrides": model_overrides,
    }
    os.makedirs(out_dir, exist_ok=True)
    with RunLock(out_dir):
        for folder in (out_dir, os.path.join(out_dir, BACKUP)):
            remove_temporaries(folder)
        if os.path.exists(os.path.join(out_dir, LAST_MODEL)):
            # Killed after its last model was written: the run is complete.
            shutil.rmtree(os.path.join(out_dir, BACKUP), ignore_errors=True)
        if not _check_out_dir(out_dir, settings):
            write_json(os.path.join(out_dir, RUN_CONFIG), settings, indent=1)
        # A run killed before its vocabulary was written builds it again:
        # the same settings give the same vocabulary.
        vocab_file = os.path.join(out_dir, VOCAB)
        if os.path.exists(vocab_file):
            vocabulary = Vocabulary.load(vocab_file)
        else:
            vocabulary = load_vocabulary(data_dir, vocab_path, tokenizer=tokenizer)
            vocabulary.save(vocab_file)

        keras.utils.set_random_seed(seed)
        overrides = dict(img_dim=train_split.img_dim, **model_overrides)
        model = model_class.from_preset(preset, vocabulary=vocabulary, **overrides)
        model.build()
        compile_scan(model, preset.learning_rate, preset.grad_clip, optimizer)
        paths = {
            "backup_dir": os.path.join(out_dir, BACKUP),
            "log_path": os.path.join(out_dir, LOG),
            "best_path": os.path.join(out_dir, BEST_MODEL),
        }
        initial_epoch = restore(model, out_dir, resume_from=resume_from, **paths)

        batches = PairBatches(
            train_split,
            vocabulary,
            batch_size=batch_size,
            shuffle=True,
            seed=seed,
            pad_to_multiple=pad_to_multiple,
            workers=workers,
        )
        n_val = min(val_images, val.n_images)
        val_captions = val.captions[: n_val * val.captions_per_image]
        recipe = [
            EpochShuffle(batches),
            keras.callbacks.LearningRateScheduler(
                step_decay(preset.learning_rate, preset.lr_update)
            ),
            # Before the validation, which may save the model: its loss is
            # the configured one again at the end of every epoch.
            HardestNegativeWarmup(preset.warmup_epochs),
            RetrievalValidation(
                val.image_features(np.arange(n_val)),
                vocabulary.encode_batch(val_captions),
                captions_per_image=val.captions_per_image,
                filepath=paths["best_path"],
                verbose=int(verbose != 0),
            ),
            # After the validation: the CSV rows carry its recalls.
            keras.callbacks.CSVLogger(paths["log_path"], append=True),
            # Last: an epoch counts as done once its best model and log row are.
            RunBackup(paths["backup_dir"]),
        ]
        try:
            history = model.fit(
                batches,
                # PairBatches shuffles by itself, by epoch; Keras' shuffle
                # would reorder the batches with the global RNG, which a
                # resumed run cannot replay.
                shuffle=False,
                epochs=epochs,
                initial_epoch=initial_epoch,
                callbacks=recipe + list(callbacks or []),
                verbose=verbose,
            )
            save_model(model, os.path.join(out_dir, LAST_MODEL))
        except OSError as err:
            # A full disk or a folder made read-only: Keras' own writers
            # (the log) do not name the file.
            raise OSError(
                err.errno,
                f"writing the run in {out_dir} failed ({err}). Every file "
                "there is the last complete one; solve the problem (free "
                "space?) and start the same command again to resume",
            ) from err
        # Only now: a kill before this line resumes at the last epoch and
        # writes the last model, without training again.
        shutil.rmtree(paths["backup_dir"], ignore_errors=True)
    return model, history
