"""Models trained with the authors' PyTorch code, as Keras `SCAN` models.

The reference code (github.com/kuanghuei/SCAN) saves its best model as
`model_best.pth.tar`, a `torch.save` dict:

    {"model": [image_encoder_state_dict, text_encoder_state_dict],
     "opt": argparse.Namespace(cross_attn=..., agg_func=..., ...),
     "epoch": ..., "best_rsum": ..., "Eiters": ...}

`load_official_checkpoint` reads the options into a `SCAN` of the same
configuration and copies every weight, so that the Keras model computes the
same similarities, on any backend. The tensors map as follows (h =
`embed_size`; torch stores a Linear weight as (out, in), Keras a kernel as
(in, out)):

| reference tensor | Keras variable |
| --- | --- |
| `fc.weight` (h, img_dim), `fc.bias` | `image_encoder.fc` kernel (transposed), bias |
| `fc.weight_g`, `fc.weight_v` (`precomp_enc_type="weight_norm"`) | the same kernel, g v / norm(v) |
| `embed.weight` (vocab_size, word_dim) | `caption_encoder.embedding` |
| `rnn.weight_ih_l{k}`, `rnn.weight_hh_l{k}`, `rnn.bias_ih_l{k}`, `rnn.bias_hh_l{k}` | layer k's forward GRU cell |
| the same with `_reverse` | layer k's backward GRU cell |

PyTorch orders a GRU's gates (reset, update, new) and Keras (update,
reset, new); both apply the reset gate after the recurrent product (Keras'
`reset_after=True`), so the recurrence is the same once the gate blocks
are reordered and the matrices transposed.

Reading the file needs PyTorch (`pip install "scan-keras[convert]"`); the
converted model does not. The file is read with
`torch.load(weights_only=True)`, which can build tensors and plain
containers but never runs code stored in the file; the one other type
allowed is `argparse.Namespace`, which holds the options. A file that
needs anything more is refused.
"""

import argparse
import os

import numpy as np

from scan_keras.data.reference_vocab import load_reference_vocabulary
from scan_keras.data.vocabulary import Vocabulary
from scan_keras.layers.norms import RAW_FEATURE_NORMS
from scan_keras.layers.options import CROSS_ATTNS
from scan_keras.models import SCAN
from scan_keras.presets import PRESETS
from scan_keras.torch_checkpoint import import_torch, load_safely, read_state

# The reference code's names of the pooling functions, and ours.
AGG_FUNCS = {"Mean": "mean", "LogSumExp": "logsumexp", "Max": "max", "Sum": "sum"}
PRECOMP_ENC_TYPES = ("basic", "weight_norm")

def _options(opt, path):
    """The checkpoint's options as a dict."""
    if isinstance(opt, argparse.Namespace):
        return vars(opt)
    if isinstance(opt, dict):
        return dict(opt)
    raise ValueError(
        f"{path}: expected the options `opt` to be an argparse.Namespace. "
        f"Received: {type(opt).__name__}"
    )


def _option(options, name, path):
    if name not in options:
        raise ValueError(
            f"{path}: the checkpoint's options lack `{name}`, which the "
            "model needs. Is it a checkpoint of the reference SCAN code?"
        )
    return options[name]


def _choice(options, name, choices, path):
    value = _option(options, name, path)
    if value not in choices:
        raise ValueError(
            f"{path}: unsupported option {name}={value!r}; scan-keras "
            f"supports {name} in {tuple(choices)}."
        )
    return value


def _scan_config(options, path):
    """SCAN constructor arguments from the reference options."""

    def get(name):
        return _option(options, name, path)

    agg_func = _option(options, "agg_func", path)
    # The reference code compares the exact names; any capitalisation of
    # them (or ours) means the same pooling.
    by_lower = {name.lower(): ours for name, ours in AGG_FUNCS.items()}
    if not isinstance(agg_func, str) or agg_func.lower() not in by_lower:
        raise ValueError(
            f"{path}: unsupported option agg_func={agg_func!r}; scan-keras "
            f"supports agg_func in {tuple(AGG_FUNCS)}."
        )
    return {
        "vocab_size": get("vocab_size"),
        "img_dim": get("img_dim"),
        "embed_size": get("embed_size"),
        "word_dim": get("word_dim"),
        "num_layers": get("num_layers"),
        "bidirectional": bool(get("bi_gru")),
        "no_imgnorm": bool(get("no_imgnorm")),
        "no_txtnorm": bool(get("no_txtnorm")),
        "cross_attn": _choice(options, "cross_attn", CROSS_ATTNS, path),
        "lambda_softmax": get("lambda_softmax"),
        "agg_func": by_lower[agg_func.lower()],
        "lambda_lse": get("lambda_lse"),
        "raw_feature_norm": _choice(
            options, "raw_feature_norm", RAW_FEATURE_NORMS, path
        ),
        # Training-only: they change no similarity, so old option sets
        # without them still convert (with the paper's values).
        "margin": options.get("margin", 0.2),
        "max_violation": bool(options.get("max_violation", True)),
    }


def _preset_name(options, config):
    """The paper's variant the options are, or None.

    `scan-keras evaluate` then shows the paper's row beside the model's.
    """
    data_name = options.get("data_name")
    dataset = data_name.split("_")[0] if isinstance(data_name, str) else None
    for preset in PRESETS.values():
        attention = preset.attention_config()
        if attention["agg_func"] != "logsumexp":
            attention.pop("lambda_lse")  # unused by the other poolings
        if preset.dataset == dataset and all(
            config[key] == value for key, value in attention.items()
        ):
            return preset.name
    return None


def _expected_shapes(config, precomp_enc_type):
    """The (image, text) state dict shapes that the options imply."""
    h, img_dim = config["embed_size"], config["img_dim"]
    if precomp_enc_type == "basic":
        image = {"fc.weight": (h, img_dim), "fc.bias": (h,)}
    else:
        # weight_norm(dim=None) keeps one scalar g for the whole matrix.
        image = {"fc.weight_g": (), "fc.weight_v": (h, img_dim), "fc.bias": (h,)}
    text = {"embed.weight": (config["vocab_size"], config["word_dim"])}
    directions = ("", "_reverse") if config["bidirectional"] else ("",)
    for k in range(config["num_layers"]):
        # Layers above the first read both directions of the one below.
        inputs = config["word_dim"] if k == 0 else h * len(directions)
        for suffix in directions:
            text[f"rnn.weight_ih_l{k}{suffix}"] = (3 * h, inputs)
            text[f"rnn.weight_hh_l{k}{suffix}"] = (3 * h, h)
            text[f"rnn.bias_ih_l{k}{suffix}"] = (3 * h,)
            text[f"rnn.bias_hh_l{k}{suffix}"] = (3 * h,)
    return image, text


def _fc_kernel(arrays):
    """The Keras (in, out) kernel of the image encoder's Linear layer."""
    if "fc.weight" in arrays:
        weight = arrays["fc.weight"]
    else:
        # weight_norm with dim=None: weight = g * v / ||v||_F, g a scalar.
        v = arrays["fc.weight_v"].astype(np.float64)
        g = float(arrays["fc.weight_g"].reshape(()))
        weight = g * v / np.linalg.norm(v)
    return np.asarray(weight.T, dtype="float32")


def _gates_to_keras(blocks):
    """Gate blocks along axis 0 from torch's (r, z, n) to Keras' (z, r, n)."""
    reset, update, new = np.split(blocks, 3, axis=0)
    return np.concatenate([update, reset, new], axis=0)


def _set_gru(gru, arrays, suffix):
    cell = gru.cell
    cell.kernel.assign(_gates_to_keras(arrays[f"rnn.weight_ih_{suffix}"]).T)
    cell.recurrent_kernel.assign(
        _gates_to_keras(arrays[f"rnn.weight_hh_{suffix}"]).T
    )
    # reset_after=True keeps the input and recurrent biases apart, as torch
    # does: row 0 is added to x W, row 1 to h U (inside the reset gate).
    cell.bias.assign(
        np.stack(
            [
                _gates_to_keras(arrays[f"rnn.bias_ih_{suffix}"]),
                _gates_to_keras(arrays[f"rnn.bias_hh_{suffix}"]),
            ]
        )
    )


def _set_weights(model, image_arrays, text_arrays):
    fc = model.image_encoder.fc
    fc.kernel.assign(_fc_kernel(image_arrays))
    fc.bias.assign(image_arrays["fc.bias"])
    encoder = model.caption_encoder
    encoder.embedding.embeddings.assign(text_arrays["embed.weight"])
    for k, rnn in enumerate(encoder.rnn_layers):
        if encoder.bidirectional:
            _set_gru(rnn.forward_layer, text_arrays, f"l{k}")
            _set_gru(rnn.backward_layer, text_arrays, f"l{k}_reverse")
        else:
            _set_gru(rnn, text_arrays, f"l{k}")


def load_official_checkpoint(path, vocabulary=None, tokenizer="nltk"):
    """A `SCAN` model from a checkpoint of the reference PyTorch code.

    Reads `model_best.pth.tar` (or any `torch.save` file of the reference
    code's `{"model": [...], "opt": ..., ...}` layout), builds a `SCAN`
    with the checkpoint's options (`cross_attn`, `agg_func`,
    `lambda_softmax`, `lambda_lse`, `raw_feature_norm`, the sizes,
    `bi_gru`, `num_layers`, `no_imgnorm`, `no_txtnorm`,
    `precomp_enc_type`) and copies its weights. The converted model scores
    image-caption pairs as the original does, on any Keras backend; save it
    with `model.save("model.keras")` to use it without PyTorch.

    The checkpoint is read with `torch.load(weights_only=True)`: no code
    stored in the file ever runs, and a file holding anything beyond
    tensors, plain containers and the options is refused.

    A model that is one of the paper's variants (by `data_name`,
    `cross_attn`, `agg_func`, the lambdas and `raw_feature_norm`) is named
    like the preset, e.g. `scan_f30k_t2i_avg`, so that `scan-keras
    evaluate` prints the paper's numbers beside its own; others are named
    `converted_scan`.

    Args:
        path: the checkpoint file.
        vocabulary: the vocabulary the model was trained with: the path of
            its JSON file (the reference code's `word2idx`/`idx2word`
            format, such as `f30k_precomp_vocab.json`) or a
            `scan_keras.data.Vocabulary`. It is stored with the model, which
            then tokenises captions into the ids the weights were trained
            on. `None` converts the weights alone; the model then needs
            token ids from elsewhere.
        tokenizer: the tokenizer of a vocabulary file that names none, as
            the authors' files do: `"nltk"` (nltk's word tokenizer, which
            the reference code used; see `scan_keras.data.vocabulary`),
            `"nltk_punkt"` (with its sentence splitter, needs nltk's
            `punkt_tab` data) or `"regex"` (the package's own, close to
            nltk, for a machine without nltk).

    Returns:
        A built `scan_keras.models.SCAN`.

    Raises:
        FileNotFoundError: the checkpoint or the vocabulary file is missing.
        ImportError: PyTorch (>= 2.4) is not installed.
        ValueError: the file is not a readable checkpoint, or holds objects
            that a safe load refuses; an option is missing or not supported
            (e.g. `precomp_enc_type` other than `"basic"` or
            `"weight_norm"`); a tensor is missing, unexpected or of the
            wrong shape for the options (the message names its key); the
            vocabulary's size differs from the checkpoint's `vocab_size`.

    Example:

    ```python
    from scan_keras.convert import load_official_checkpoint

    model = load_official_checkpoint(
        "runs/f30k_scan/model_best.pth.tar",
        vocabulary="vocab/f30k_precomp_vocab.json",
    )
    model.save("f30k_scan.keras")  # loads without PyTorch, on any backend
    ```
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint file not found: {path}")
    if isinstance(vocabulary, (str, os.PathLike)):
        # The reference's JSON or its pickled Vocabulary, read safely.
        vocabulary = load_reference_vocabulary(vocabulary, tokenizer=tokenizer)
        # Fails now, with the fix, where the tokenizer is not installed.
        vocabulary.tokenize("a")
    elif vocabulary is not None and not isinstance(vocabulary, Vocabulary):
        raise ValueError(
            "Expected `vocabulary` to be the path of a vocabulary file (JSON "
            "or the reference's pickle), "
            "a scan_keras.data.Vocabulary or None. "
            f"Received: vocabulary={vocabulary!r:.80}"
        )
    torch = import_torch()
    checkpoint = load_safely(torch, path)
    if not isinstance(checkpoint, dict) or not {"model", "opt"} <= set(checkpoint):
        keys = sorted(checkpoint) if isinstance(checkpoint, dict) else None
        raise ValueError(
            f"{path} is not a checkpoint of the reference SCAN code: expected "
            "a dict with the keys 'model' and 'opt'. Received: "
            + (f"keys {keys}" if keys is not None else type(checkpoint).__name__)
        )
    states = checkpoint["model"]
    if not isinstance(states, (list, tuple)) or len(states) != 2:
        raise ValueError(
            f"{path}: expected 'model' to be the list [image encoder state "
            "dict, text encoder state dict]. Received: "
            + (
                f"a {type(states).__name__} of length {len(states)}"
                if isinstance(states, (list, tuple))
                else type(states).__name__
            )
        )
    options = _options(checkpoint["opt"], path)
    config = _scan_config(options, path)
    precomp_enc_type = _choice(options, "precomp_enc_type", PRECOMP_ENC_TYPES, path)

    if vocabulary is not None and len(vocabulary) != config["vocab_size"]:
        raise ValueError(
            f"The vocabulary has {len(vocabulary)} words, but {path} was "
            f"trained with vocab_size={config['vocab_size']}: pass the "
            "vocabulary JSON the model was trained with."
        )

    try:
        # The constructor checks the sizes and the attention's options.
        preset = _preset_name(options, config)
        name = "converted_scan" if preset is None else f"scan_{preset}"
        model = SCAN(vocabulary=vocabulary, name=name, preset=preset, **config)
    except ValueError as err:
        raise ValueError(f"{path}: the checkpoint's options: {err}") from None

    image_shapes, text_shapes = _expected_shapes(config, precomp_enc_type)
    image_arrays = read_state(
        torch,
        states[0],
        image_shapes,
        "image encoder",
        f"img_dim={config['img_dim']}, embed_size={config['embed_size']}, "
        f"precomp_enc_type={precomp_enc_type!r}",
        path,
    )
    text_arrays = read_state(
        torch,
        states[1],
        text_shapes,
        "text encoder",
        f"vocab_size={config['vocab_size']}, word_dim={config['word_dim']}, "
        f"embed_size={config['embed_size']}, "
        f"num_layers={config['num_layers']}, "
        f"bi_gru={config['bidirectional']}",
        path,
    )
    model.build()
    _set_weights(model, image_arrays, text_arrays)
    return model
