"""Callbacks of the paper's training recipe.

- `step_decay`: the learning-rate schedule (divided by 10 every
  `lr_update` epochs), for `keras.callbacks.LearningRateScheduler`.
- `RetrievalValidation`: recall on a validation split after every epoch,
  logged as `val_i2t_r1` ... `val_rsum`, keeping the model with the best
  rsum, which is how the paper selects its model.
- `EpochShuffle`: tells a `PairBatches` which epoch is starting, so that a
  resumed run draws the same batches as an uninterrupted one.
"""

import os

import keras

from scan_keras.atomic import read_json, save_model, write_json
from scan_keras.checks import check_int, check_positive_int, check_positive_number
from scan_keras.evaluation import retrieval_metrics
from scan_keras.scoring import similarity_matrix


def step_decay(learning_rate, lr_update):
    """The reference schedule: `learning_rate * 0.1 ** (epoch // lr_update)`.

    Returns a `schedule(epoch, lr)` function for
    `keras.callbacks.LearningRateScheduler` (`epoch` is 0-based).
    """
    check_positive_number("learning_rate", learning_rate)
    check_positive_int("lr_update", lr_update)

    def schedule(epoch, lr=None):
        return learning_rate * 0.1 ** (epoch // lr_update)

    return schedule


class RetrievalValidation(keras.callbacks.Callback):
    """Validation recall after every epoch; keeps the best model by rsum.

    The model is scored by `scoring.similarity_matrix`: a model made of
    encoders and a similarity layer, such as `scan_keras.models.SCAN`. The metrics of `retrieval_metrics` are
    added to the epoch's logs with a `val_` prefix, so the progress bar,
    `History` and a `CSVLogger` placed after this callback all see them.

    With `filepath`, the model is saved there whenever rsum improves, and
    the best metrics are written beside it (`<filepath>.json`); a resumed
    run reads them back, so an interrupted run never replaces its best
    model with a worse one.

    Args:
        features: validation region features `(n_images, R, img_dim)`.
        token_ids: their captions' token ids `(n_images * cpi, W)`.
        captions_per_image: captions of each image (cpi).
        filepath: where to save the best model (a `.keras` path), or None.
        batch_size: images encoded at a time.
        verbose: print the recalls after each epoch.
    """

    def __init__(
        self,
        features,
        token_ids,
        captions_per_image=5,
        filepath=None,
        batch_size=128,
        verbose=1,
    ):
        super().__init__()
        if len(token_ids) != len(features) * captions_per_image:
            raise ValueError(
                f"{len(features)} validation images with {captions_per_image} "
                f"captions each need {len(features) * captions_per_image} "
                f"captions. Received: {len(token_ids)}"
            )
        self.features = features
        self.token_ids = token_ids
        self.captions_per_image = captions_per_image
        self.filepath = filepath
        self.batch_size = batch_size
        self.verbose = verbose
        self.best = None

    @property
    def record_path(self):
        return None if self.filepath is None else f"{self.filepath}.json"

    def on_train_begin(self, logs=None):
        path = self.record_path
        if path is not None and os.path.exists(path):
            record = read_json(path, "the best model's record")
            if not isinstance(record, dict) or "rsum" not in record:
                raise ValueError(
                    f"{path}: the best model's record holds no 'rsum'. "
                    f"Received: {str(record)[:80]}"
                )
            self.best = record["rsum"]

    def on_epoch_end(self, epoch, logs=None):
        sims = similarity_matrix(
            self.model, self.features, self.token_ids, batch_size=self.batch_size,
            verbose=0,
        )
        metrics = retrieval_metrics(sims, self.captions_per_image)
        if logs is not None:
            logs.update({f"val_{name}": value for name, value in metrics.items()})
        improved = self.best is None or metrics["rsum"] > self.best
        if improved:
            self.best = metrics["rsum"]
            if self.filepath is not None:
                # Each file whole or not at all: a kill mid-write leaves the
                # previous best model in place.
                save_model(self.model, self.filepath)
                write_json(self.record_path, dict(metrics, epoch=epoch + 1), indent=1)
        if self.verbose:
            print(
                f"\nEpoch {epoch + 1} validation: "
                f"i2t R@1/5/10 {metrics['i2t_r1']:.1f} {metrics['i2t_r5']:.1f} "
                f"{metrics['i2t_r10']:.1f} | t2i R@1/5/10 {metrics['t2i_r1']:.1f} "
                f"{metrics['t2i_r5']:.1f} {metrics['t2i_r10']:.1f} | rsum "
                f"{metrics['rsum']:.1f}" + (" (best)" if improved else "")
            )


class EpochShuffle(keras.callbacks.Callback):
    """Sets the epoch of a `PairBatches` before each epoch's first batch.

    Its shuffle order depends on the epoch alone, so a run resumed by
    `scan_keras.runs` at epoch e sees the batches an uninterrupted run
    would have seen.
    """

    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.set_epoch(epoch)


class HardestNegativeWarmup(keras.callbacks.Callback):
    """Sums the hinge over all negatives for the first `epochs` epochs,
    then keeps only the hardest negatives.

    Hardest negatives from the first step can hold a model at the collapsed
    start, where every score is alike (Faghri et al. report it for VSE++);
    summing over all negatives first gives every pair a gradient. The
    switch recompiles the train step, whose loss is fixed when it is
    traced. Between epochs the loss is the model's own again, so a model
    saved at the end of a warm-up epoch carries its configured loss.

    Args:
        epochs: epochs (0-based epochs `0 .. epochs - 1`) with the summed
            hinge. Nothing changes for a model without `max_violation`.
    """

    def __init__(self, epochs):
        super().__init__()
        check_int("epochs", epochs, minimum=0)
        self.epochs = int(epochs)
        self._configured = True

    def on_train_begin(self, logs=None):
        self._configured = self.model.contrastive_loss.max_violation

    def on_epoch_begin(self, epoch, logs=None):
        self._use_hardest(epoch >= self.epochs)

    def on_epoch_end(self, epoch, logs=None):
        self._use_hardest(True)

    def _use_hardest(self, hardest):
        loss = self.model.contrastive_loss
        wanted = self._configured and hardest
        if loss.max_violation != wanted:
            loss.max_violation = wanted
            self.model.make_train_function(force=True)
