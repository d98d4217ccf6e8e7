"""Training steps of scan-keras against the reference code's, side by side.

The reference code's encoders are built in torch and initialised as it
initialises them; `load_official_checkpoint` copies the same weights into a
Keras `SCAN`; both then train on the same batches with the paper's recipe
(Adam at 2e-4, gradients clipped to a global norm of 2.0, the hinge loss),
the reference with `torch.optim.Adam` and `clip_grad_norm_`, scan-keras with
`compile_scan` and `train_on_batch`. After every step it prints the two
losses and how far the Keras weights are from the reference's, relative to
the update the reference made:

    |W_keras - W_torch| / |W_torch - W_start|   (all weights together)

Run it on each backend:

    KERAS_BACKEND=jax python tests/training_fidelity.py
    KERAS_BACKEND=jax python tests/training_fidelity.py --optimizer keras_adam
"""

import argparse
import os
import sys
import tempfile

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch_reference  # noqa: E402
from scan_keras.convert import _set_weights, load_official_checkpoint  # noqa: E402
from scan_keras.training import compile_scan  # noqa: E402

SIZES = dict(vocab_size=40, img_dim=24, embed_size=32, word_dim=16)
N_REGIONS = 6
BATCH = 16
LEARNING_RATE = 2e-4


def make_options(cross_attn="t2i", max_violation=True, agg_func="Mean"):
    """The reference train.py's options for one of the paper's variants."""
    lambda_softmax, lambda_lse = (9.0, 6.0) if cross_attn == "t2i" else (4.0, 5.0)
    return argparse.Namespace(
        data_name="f30k_precomp", margin=0.2, grad_clip=2.0, num_layers=1,
        learning_rate=LEARNING_RATE, max_violation=max_violation, no_imgnorm=False,
        no_txtnorm=False, raw_feature_norm="clipped_l2norm", agg_func=agg_func,
        cross_attn=cross_attn, precomp_enc_type="basic", bi_gru=True,
        lambda_lse=lambda_lse, lambda_softmax=lambda_softmax, **SIZES,
    )


def make_batches(n_steps, seed=0):
    """Batches of matching pairs, captions sorted by decreasing length as
    the reference code's collate_fn sorts them; <start> ... <end> ids."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(n_steps):
        features = rng.random((BATCH, N_REGIONS, SIZES["img_dim"]), dtype=np.float32)
        lengths = np.sort(rng.integers(3, 12, size=BATCH))[::-1]
        token_ids = np.zeros((BATCH, lengths[0]), dtype=np.int32)
        for i, n in enumerate(lengths):
            token_ids[i, :n] = [1, *rng.integers(4, SIZES["vocab_size"], size=n - 2), 2]
        batches.append((features, token_ids))
    return batches


def _weights(model):
    return [np.asarray(w, np.float64) for w in model.get_weights()]


def compare(cross_attn="t2i", max_violation=True, agg_func="Mean", steps=6,
            optimizer="torch_adam", seed=0):
    """Per step: the two losses, their relative difference and the relative
    weight error. `optimizer` is the Keras side's (the reference always
    takes torch.optim.Adam's steps, or the legacy ones for
    `"torch_adam_legacy"`)."""
    opt = make_options(cross_attn, max_violation, agg_func)
    encoders = torch_reference.reference_encoders(opt, seed=seed)
    with tempfile.TemporaryDirectory() as folder:
        path = torch_reference.save_checkpoint(
            os.path.join(folder, "start.pth.tar"), encoders, opt
        )
        model = load_official_checkpoint(path)
        mirror = load_official_checkpoint(path)
    start = _weights(model)
    compile_scan(model, LEARNING_RATE, opt.grad_clip, optimizer=optimizer)
    trainer = torch_reference.Trainer(
        encoders,
        opt,
        LEARNING_RATE,
        "torch_adam_legacy" if optimizer == "torch_adam_legacy" else "torch_adam",
    )
    rows = []
    for k, (features, token_ids) in enumerate(make_batches(steps, seed + 1), start=1):
        loss_reference = trainer.step(features, token_ids)
        logs = model.train_on_batch(
            {"features": features, "token_ids": token_ids}, return_dict=True
        )
        loss = float(logs["loss"])
        _set_weights(mirror, *trainer.state_arrays())
        expected, actual = _weights(mirror), _weights(model)
        diff = np.sqrt(sum(np.sum((a - e) ** 2) for a, e in zip(actual, expected)))
        update = np.sqrt(sum(np.sum((e - s) ** 2) for e, s in zip(expected, start)))
        rows.append(
            dict(
                step=k,
                loss_reference=loss_reference,
                loss=loss,
                loss_error=abs(loss - loss_reference) / abs(loss_reference),
                update_error=float(diff / update),
            )
        )
    return rows


CASES = [
    (cross_attn, max_violation)
    for cross_attn in ("t2i", "i2t")
    for max_violation in (True, False)
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--optimizer", default="torch_adam")
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args(argv)
    print(f"backend {keras.backend.backend()}, optimizer {args.optimizer}")
    print("| formulation | negatives | step | loss (reference) | loss (scan-keras) "
          "| loss rel. diff | weight rel. error |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for cross_attn, max_violation in CASES:
        rows = compare(cross_attn, max_violation, steps=args.steps, optimizer=args.optimizer)
        for r in rows:
            print(
                f"| {cross_attn} | {'hardest' if max_violation else 'all'} | {r['step']} "
                f"| {r['loss_reference']:.6f} | {r['loss']:.6f} "
                f"| {r['loss_error']:.1e} | {r['update_error']:.1e} |"
            )


if __name__ == "__main__":
    main()
