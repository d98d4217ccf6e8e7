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
| `backup/` | the state of an unfinished run (weights, optimizer, epoch) |
"""

import os

import keras
import numpy as np

from scan_keras.atomic import read_json, save_model, write_json
from scan_keras.callbacks import EpochShuffle, RetrievalValidation, step_decay
from scan_keras.data import PairBatches, Vocabulary, load_split
from scan_keras.data.vocabulary import check_tokenizer
from scan_keras.models import SCAN
from scan_keras.optimizers import get_optimizer
from scan_keras.presets import get_preset

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

    `vocab_path` if given (for example the released `f30k_precomp_vocab.json`),
    else `vocab.json` in `data_dir` if present, else one built from the
    train and dev captions with words seen at least `min_count` times.
    `tokenizer` is that of a built vocabulary, or of a file naming none
    (see `scan_keras.data.vocabulary`).
    """
    if vocab_path is None:
        candidate = os.path.join(data_dir, VOCAB)
        if os.path.exists(candidate):
            vocab_path = candidate
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
        if os.path.isdir(out_dir) and os.listdir(out_dir):
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
    # Runs written before the optimizer was a setting trained with Keras' Adam.
    previous.setdefault("optimizer", "keras_adam")
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
            `scan_keras.models.GlobalEmbedding`.
        optimizer: the optimizer's name, see `compile_scan`.
        tokenizer: the tokenizer of a vocabulary built for the run (see
            `load_vocabulary`); a resumed run keeps its own.
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
    settings = {
        "preset": preset.name,
        "model": model_class.__name__,
        "data_dir": os.path.abspath(data_dir),
        "epochs": epochs,
        "batch_size": batch_size,
        "val_split": val_split,
        "val_images": val_images,
        "seed": seed,
        "optimizer": optimizer,
        "model_overrides": model_overrides,
    }
    resume = _check_out_dir(out_dir, settings)
    os.makedirs(out_dir, exist_ok=True)

    train_split = load_split(data_dir, "train")
    val = load_split(data_dir, val_split)
    if resume:
        vocabulary = Vocabulary.load(os.path.join(out_dir, VOCAB))
    else:
        vocabulary = load_vocabulary(data_dir, vocab_path, tokenizer=tokenizer)
        vocabulary.save(os.path.join(out_dir, VOCAB))
        write_json(os.path.join(out_dir, RUN_CONFIG), settings, indent=1)

    keras.utils.set_random_seed(seed)
    overrides = dict(img_dim=train_split.img_dim, **model_overrides)
    model = model_class.from_preset(preset, vocabulary=vocabulary, **overrides)
    model.build()
    compile_scan(model, preset.learning_rate, preset.grad_clip, optimizer)

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
        RetrievalValidation(
            val.image_features(np.arange(n_val)),
            vocabulary.encode_batch(val_captions),
            captions_per_image=val.captions_per_image,
            filepath=os.path.join(out_dir, BEST_MODEL),
            verbose=int(verbose != 0),
        ),
        # After the validation: the CSV rows carry its recalls.
        keras.callbacks.CSVLogger(os.path.join(out_dir, LOG), append=True),
        keras.callbacks.BackupAndRestore(os.path.join(out_dir, BACKUP)),
    ]
    history = model.fit(
        batches,
        # PairBatches shuffles by itself, by epoch; Keras' shuffle would
        # reorder the batches with the global RNG, which a resumed run
        # cannot replay.
        shuffle=False,
        epochs=epochs,
        callbacks=recipe + list(callbacks or []),
        verbose=verbose,
    )
    save_model(model, os.path.join(out_dir, LAST_MODEL))
    return model, history
