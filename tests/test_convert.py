"""Checkpoints of the reference PyTorch code, converted to Keras.

Each checkpoint is made here as the reference code makes it: torch modules
named like its encoders (`fc`, `embed`, `rnn`), filled with random weights,
saved with `torch.save` beside an `argparse.Namespace` of options. The
converted model must then give the embeddings that torch itself computes
(`nn.Linear`; `nn.GRU` over packed sequences, directions averaged) and the
similarities that `reference.py` computes from those embeddings.
"""

import argparse
import collections
import json
import os
import sys

import keras
import numpy as np
import pytest
from keras import ops

torch = pytest.importorskip("torch")

import reference  # noqa: E402
from torch_reference import (  # noqa: E402
    ImageEncoder,
    TextEncoder,
    save_checkpoint,
)
from scan_keras import cli  # noqa: E402
from scan_keras.convert import load_official_checkpoint  # noqa: E402
from scan_keras.data import Vocabulary, load_split, write_toy_precomp  # noqa: E402
from scan_keras.evaluation import retrieval_metrics  # noqa: E402

VOCAB_SIZE = 30
IMG_DIM = 12
EMBED_SIZE = 16
WORD_DIM = 10
N_REGIONS = 5
CAPTION_LENGTHS = np.array([9, 4, 6, 1, 7, 3])

# The reference code's names of the poolings, and reference.py's.
AGG_FUNCS = {"Mean": "mean", "LogSumExp": "logsumexp", "Max": "max", "Sum": "sum"}


def make_options(**overrides):
    """Options as the reference train.py leaves them (paper's t2i AVG)."""
    values = dict(
        data_path="data", data_name="f30k_precomp", vocab_path="vocab",
        margin=0.2, num_epochs=30, batch_size=128, word_dim=WORD_DIM,
        embed_size=EMBED_SIZE, grad_clip=2.0, num_layers=1,
        learning_rate=2e-4, lr_update=15, workers=10, log_step=10,
        val_step=500, logger_name="runs/log", model_name="runs/model",
        resume="", max_violation=True, img_dim=IMG_DIM, no_imgnorm=False,
        no_txtnorm=False, raw_feature_norm="clipped_l2norm", agg_func="Mean",
        cross_attn="t2i", precomp_enc_type="basic", bi_gru=True,
        lambda_lse=6.0, lambda_softmax=9.0, vocab_size=VOCAB_SIZE,
    )
    values.update(overrides)
    return argparse.Namespace(**values)


def make_encoders(opt, seed=0):
    """Reference encoders with random weights (not torch's initialisation,
    so that every weight, bias and gate block matters)."""
    rng = np.random.default_rng(seed)
    encoders = ImageEncoder(opt), TextEncoder(opt)
    with torch.no_grad():
        for encoder in encoders:
            for _, parameter in sorted(encoder.named_parameters()):
                value = np.asarray(0.3 * rng.normal(size=tuple(parameter.shape)))
                parameter.copy_(torch.from_numpy(value.astype("float32")))
    return encoders


def random_inputs(seed=1, n_images=4):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n_images, N_REGIONS, IMG_DIM)).astype("float32")
    width = int(CAPTION_LENGTHS.max())
    token_ids = rng.integers(1, VOCAB_SIZE, size=(len(CAPTION_LENGTHS), width))
    token_ids[np.arange(width)[None, :] >= CAPTION_LENGTHS[:, None]] = 0
    return features, token_ids.astype("int32")


def torch_embeddings(encoders, features, token_ids):
    """Region and word vectors as the reference code computes them."""
    lengths = torch.from_numpy((token_ids != 0).sum(axis=1))
    with torch.no_grad():
        regions = encoders[0](torch.from_numpy(features))
        words = encoders[1](torch.from_numpy(token_ids).long(), lengths)
    return regions.numpy(), words.numpy()


def assert_vectors_close(actual, expected, tol=1e-5):
    """Largest relative error of a vector (last axis) is at most `tol`."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    error = np.linalg.norm(actual - expected, axis=-1) / np.maximum(
        np.linalg.norm(expected, axis=-1), 1e-12
    )
    assert error.max() <= tol, f"relative error {error.max():.2e} > {tol}"


def real_words(words, token_ids):
    """The vectors of the real (non-padding) words, `(n_real_words, h)`."""
    return np.asarray(words)[token_ids != 0]


def toy_vocabulary(size=VOCAB_SIZE):
    return Vocabulary(
        ["<pad>", "<start>", "<end>", "<unk>"] + [f"w{i}" for i in range(4, size)]
    )


# ---------------------------------------------------------- embeddings and similarity


@pytest.mark.slow
@pytest.mark.parametrize(
    "bi_gru, num_layers, no_imgnorm, no_txtnorm",
    [
        (True, 1, False, False),
        (True, 2, False, False),
        (False, 1, False, False),
        (False, 2, False, False),
        (True, 2, True, True),
    ],
)
def test_encoders_match_torch(tmp_path, bi_gru, num_layers, no_imgnorm, no_txtnorm):
    opt = make_options(
        bi_gru=bi_gru, num_layers=num_layers, no_imgnorm=no_imgnorm,
        no_txtnorm=no_txtnorm,
    )
    encoders = make_encoders(opt)
    path = save_checkpoint(tmp_path / "model_best.pth.tar", encoders, opt)
    model = load_official_checkpoint(path)
    features, token_ids = random_inputs()
    regions, words = torch_embeddings(encoders, features, token_ids)

    assert_vectors_close(ops.convert_to_numpy(model.encode_images(features)), regions)
    actual, mask = model.encode_captions(token_ids)
    np.testing.assert_array_equal(ops.convert_to_numpy(mask), token_ids != 0)
    assert_vectors_close(
        real_words(ops.convert_to_numpy(actual), token_ids),
        real_words(words, token_ids),
    )
    encoder = model.caption_encoder
    assert (encoder.bidirectional, encoder.num_layers) == (bi_gru, num_layers)
    assert model.image_encoder.no_imgnorm == no_imgnorm
    assert encoder.no_txtnorm == no_txtnorm


@pytest.fixture(scope="module")
def paper_encoders():
    """The paper's encoders (1-layer bi-GRU) and their torch embeddings."""
    opt = make_options()
    encoders = make_encoders(opt, seed=3)
    features, token_ids = random_inputs(seed=4)
    regions, words = torch_embeddings(encoders, features, token_ids)
    return encoders, features, token_ids, regions, words


ATTENTION_CASES = [
    (cross_attn, agg_func, "clipped_l2norm")
    for cross_attn in ("t2i", "i2t")
    for agg_func in AGG_FUNCS
] + [
    ("t2i", "Mean", "softmax"),
    ("i2t", "LogSumExp", "l2norm"),
    ("t2i", "Sum", "clipped"),
    ("i2t", "Max", "no_norm"),
]


@pytest.mark.parametrize("cross_attn, agg_func, raw_feature_norm", ATTENTION_CASES)
def test_similarity_matches_reference(
    tmp_path, paper_encoders, cross_attn, agg_func, raw_feature_norm
):
    encoders, features, token_ids, regions, words = paper_encoders
    lambda_softmax, lambda_lse = (9.0, 6.0) if cross_attn == "t2i" else (4.0, 5.0)
    opt = make_options(
        cross_attn=cross_attn, agg_func=agg_func, raw_feature_norm=raw_feature_norm,
        lambda_softmax=lambda_softmax, lambda_lse=lambda_lse,
    )
    path = save_checkpoint(tmp_path / "model_best.pth.tar", encoders, opt)
    model = load_official_checkpoint(path)

    sims = model.similarity(features, token_ids)
    expected = reference.similarity_matrix(
        regions.astype(np.float64),
        words.astype(np.float64),
        image_lengths=[N_REGIONS] * len(features),
        caption_lengths=(token_ids != 0).sum(axis=1),
        cross_attn=cross_attn,
        lambda_softmax=lambda_softmax,
        agg_func=AGG_FUNCS[agg_func],
        lambda_lse=lambda_lse,
        raw_norm=raw_feature_norm,
    )
    assert sims.shape == (len(features), len(token_ids))
    np.testing.assert_allclose(sims, expected, rtol=1e-5, atol=2e-6)


def test_weight_norm_image_encoder(tmp_path):
    opt = make_options(precomp_enc_type="weight_norm")
    encoders = make_encoders(opt)
    with torch.no_grad():
        encoders[0].fc.weight_g.fill_(2.5)  # far from ||v||: g must be applied
    state = encoders[0].state_dict()
    assert {"fc.weight_g", "fc.weight_v", "fc.bias"} == set(state)
    path = save_checkpoint(tmp_path / "wn.pth.tar", encoders, opt)
    model = load_official_checkpoint(path)
    features, token_ids = random_inputs()
    regions, words = torch_embeddings(encoders, features, token_ids)
    assert_vectors_close(ops.convert_to_numpy(model.encode_images(features)), regions)

    # Without the l2 norm the scale of g shows in the output.
    opt = make_options(precomp_enc_type="weight_norm", no_imgnorm=True)
    encoders = make_encoders(opt)
    path = save_checkpoint(tmp_path / "wn_raw.pth.tar", encoders, opt)
    regions, _ = torch_embeddings(encoders, features, token_ids)
    model = load_official_checkpoint(path)
    assert_vectors_close(ops.convert_to_numpy(model.encode_images(features)), regions)


def test_vocabulary_is_stored_with_the_model(tmp_path):
    vocabulary = toy_vocabulary()
    vocab_path = str(tmp_path / "vocab.json")
    vocabulary.save(vocab_path)
    opt = make_options()
    path = save_checkpoint(tmp_path / "m.pth.tar", make_encoders(opt), opt)
    model = load_official_checkpoint(path, vocabulary=vocab_path)
    assert model.vocabulary == vocabulary
    # The same from a Vocabulary object; the ids are the file's.
    model = load_official_checkpoint(path, vocabulary=vocabulary)
    assert model.vocabulary.encode("w4 w29") == [1, 4, 29, 2]

    saved = str(tmp_path / "converted.keras")
    model.save(saved)
    restored = keras.saving.load_model(saved)
    assert restored.vocabulary == vocabulary
    features, token_ids = random_inputs()
    np.testing.assert_allclose(
        restored.similarity(features, token_ids),
        model.similarity(features, token_ids),
        rtol=1e-6, atol=1e-6,
    )


@pytest.mark.parametrize(
    "overrides, name",
    [
        (dict(), "scan_f30k_t2i_avg"),
        (
            dict(data_name="coco_precomp", cross_attn="i2t", agg_func="LogSumExp",
                 lambda_softmax=4.0, lambda_lse=20.0),
            "scan_coco_i2t_lse",
        ),
        # lambda_lse does not matter to AVG pooling.
        (dict(cross_attn="i2t", lambda_softmax=4.0, lambda_lse=1.0), "scan_f30k_i2t_avg"),
        (dict(lambda_softmax=5.0), "converted_scan"),
        (dict(agg_func="Max"), "converted_scan"),
        (dict(data_name="mydata_precomp"), "converted_scan"),
    ],
)
def test_model_named_after_the_paper_variant(tmp_path, overrides, name):
    opt = make_options(**overrides)
    path = save_checkpoint(tmp_path / "m.pth.tar", make_encoders(opt), opt)
    assert load_official_checkpoint(path).name == name


# ------------------------------------------------------------------- safe loading


class CustomStateDict(collections.OrderedDict):
    """A state dict of a class the safe loader does not know."""


class MakeDirectory:
    """Unpickling this runs os.mkdir(path): stands for any code in a file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_code_in_the_file_never_runs(tmp_path, zip_format):
    marker = str(tmp_path / "payload_ran")
    opt = make_options()
    encoders = make_encoders(opt)
    path = str(tmp_path / "evil.pth.tar")
    torch.save(
        {
            "model": [encoders[0].state_dict(), encoders[1].state_dict()],
            "opt": opt,
            "epoch": MakeDirectory(marker),
        },
        path,
        _use_new_zipfile_serialization=zip_format,
    )
    with pytest.raises(ValueError, match="Refusing to load") as info:
        load_official_checkpoint(path)
    message = str(info.value)
    assert path in message and "mkdir" in message and "unsafe" in message
    assert not os.path.exists(marker)
    # The payload is live: an unsafe load (never done by scan-keras) runs it.
    torch.load(path, weights_only=False)
    assert os.path.isdir(marker)


def test_unknown_classes_are_refused(tmp_path):
    opt = make_options()
    encoders = make_encoders(opt)
    state = CustomStateDict(encoders[0].state_dict())
    path = save_checkpoint(tmp_path / "odd.pth.tar", encoders, opt, image_state=state)
    with pytest.raises(ValueError, match="CustomStateDict") as info:
        load_official_checkpoint(path)
    assert path in str(info.value) and "Refusing" in str(info.value)


def test_missing_and_unreadable_files(tmp_path):
    missing = str(tmp_path / "nowhere.pth.tar")
    with pytest.raises(FileNotFoundError, match="nowhere.pth.tar"):
        load_official_checkpoint(missing)
    junk = tmp_path / "junk.pth.tar"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="junk.pth.tar"):
        load_official_checkpoint(str(junk))
    empty = tmp_path / "empty.pth.tar"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.pth.tar"):
        load_official_checkpoint(str(empty))

    opt = make_options()
    path = save_checkpoint(tmp_path / "m.pth.tar", make_encoders(opt), opt)
    with pytest.raises(FileNotFoundError, match="no_vocab.json"):
        load_official_checkpoint(path, vocabulary=str(tmp_path / "no_vocab.json"))


def test_not_a_scan_checkpoint(tmp_path):
    path = str(tmp_path / "other.pth")
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(ValueError, match="'model' and 'opt'"):
        load_official_checkpoint(path)
    torch.save({"model": [{}], "opt": make_options()}, path)
    with pytest.raises(ValueError, match="length 1"):
        load_official_checkpoint(path)


# ---------------------------------------------- tensors and options that disagree


def _state_dicts(opt):
    encoders = make_encoders(opt)
    return encoders, dict(encoders[0].state_dict()), dict(encoders[1].state_dict())


def test_wrong_shapes_name_the_key(tmp_path):
    opt = make_options()
    encoders, image, text = _state_dicts(opt)
    image["fc.weight"] = torch.zeros(EMBED_SIZE, IMG_DIM + 1)
    path = save_checkpoint(tmp_path / "a.pth", encoders, opt, image_state=image)
    with pytest.raises(ValueError, match=r"'fc\.weight'.*\(16, 13\).*\(16, 12\)"):
        load_official_checkpoint(path)

    encoders, image, text = _state_dicts(opt)
    text["rnn.weight_hh_l0_reverse"] = torch.zeros(3 * EMBED_SIZE, EMBED_SIZE + 2)
    path = save_checkpoint(tmp_path / "b.pth", encoders, opt, text_state=text)
    with pytest.raises(ValueError, match=r"'rnn\.weight_hh_l0_reverse'"):
        load_official_checkpoint(path)

    # opt.vocab_size disagrees with the embedding table.
    path = save_checkpoint(
        tmp_path / "c.pth", encoders, make_options(vocab_size=VOCAB_SIZE + 5)
    )
    with pytest.raises(ValueError, match=r"'embed\.weight'.*vocab_size=35"):
        load_official_checkpoint(path)

    encoders, image, text = _state_dicts(opt)
    text["embed.weight"] = text["embed.weight"].long()
    path = save_checkpoint(tmp_path / "d.pth", encoders, opt, text_state=text)
    with pytest.raises(ValueError, match=r"'embed\.weight'.*floating-point"):
        load_official_checkpoint(path)


def test_missing_and_unexpected_keys_are_named(tmp_path):
    opt = make_options()
    encoders, image, text = _state_dicts(opt)
    del text["rnn.bias_hh_l0_reverse"]
    path = save_checkpoint(tmp_path / "a.pth", encoders, opt, text_state=text)
    with pytest.raises(ValueError, match=r"lacks 'rnn\.bias_hh_l0_reverse'"):
        load_official_checkpoint(path)

    # A 2-layer GRU saved with options that say 1 layer.
    two_layers = make_encoders(make_options(num_layers=2))
    path = save_checkpoint(tmp_path / "b.pth", two_layers, opt)
    with pytest.raises(ValueError, match=r"unexpected key 'rnn\.\w+_l1'"):
        load_official_checkpoint(path)

    # A plain Linear saved with options that say weight_norm.
    path = save_checkpoint(
        tmp_path / "c.pth", encoders, make_options(precomp_enc_type="weight_norm")
    )
    with pytest.raises(ValueError, match=r"lacks 'fc\.weight_g'.*weight_norm"):
        load_official_checkpoint(path)


@pytest.mark.parametrize(
    "option, value",
    [
        ("precomp_enc_type", "backbone"),
        ("agg_func", "Median"),
        ("raw_feature_norm", "l3norm"),
        ("cross_attn", "both"),
    ],
)
def test_unsupported_options(tmp_path, option, value):
    opt = make_options()
    encoders = make_encoders(opt)
    setattr(opt, option, value)
    path = save_checkpoint(tmp_path / "m.pth", encoders, opt)
    with pytest.raises(ValueError, match=f"unsupported option {option}={value!r}"):
        load_official_checkpoint(path)


def test_missing_and_invalid_options(tmp_path):
    opt = make_options()
    encoders = make_encoders(opt)
    del opt.cross_attn
    path = save_checkpoint(tmp_path / "a.pth", encoders, opt)
    with pytest.raises(ValueError, match="lack `cross_attn`"):
        load_official_checkpoint(path)

    path = save_checkpoint(tmp_path / "b.pth", encoders, make_options(lambda_softmax=-1.0))
    with pytest.raises(ValueError, match="lambda_softmax=-1.0"):
        load_official_checkpoint(path)


def test_vocabulary_size_must_match(tmp_path):
    opt = make_options()
    path = save_checkpoint(tmp_path / "m.pth", make_encoders(opt), opt)
    with pytest.raises(ValueError, match="29 words.*vocab_size=30"):
        load_official_checkpoint(path, vocabulary=toy_vocabulary(VOCAB_SIZE - 1))
    with pytest.raises(ValueError, match="Received: vocabulary="):
        load_official_checkpoint(path, vocabulary=toy_vocabulary().words)


def test_torch_missing_gives_an_install_hint(tmp_path, monkeypatch):
    opt = make_options()
    path = save_checkpoint(tmp_path / "m.pth", make_encoders(opt), opt)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` fails
    with pytest.raises(ImportError, match=r"scan-keras\[convert\]"):
        load_official_checkpoint(path)


# ------------------------------------------------------------------ command line


@pytest.mark.slow
def test_cli_convert_then_evaluate(tmp_path, capsys):
    data_dir = str(tmp_path / "toy_precomp")
    vocabulary = write_toy_precomp(
        data_dir, n_images={"test": 20}, img_dim=IMG_DIM, seed=0
    )
    opt = make_options(vocab_size=len(vocabulary))
    checkpoint = save_checkpoint(tmp_path / "model_best.pth.tar", make_encoders(opt), opt)
    out = str(tmp_path / "converted" / "model.keras")

    code = cli.main(
        ["convert", checkpoint, "--vocab", os.path.join(data_dir, "vocab.json"),
         "--out", out]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert os.path.isfile(out) and out in printed.out

    report = str(tmp_path / "eval.json")
    code = cli.main(
        ["evaluate", "--data-dir", data_dir, "--split", "test", "--json", report, out]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err

    model = keras.saving.load_model(out, compile=False)
    assert model.vocabulary == vocabulary
    split = load_split(data_dir, "test")
    sims = model.similarity(
        split.image_features(np.arange(split.n_images)),
        vocabulary.encode_batch(split.captions),
    )
    expected = retrieval_metrics(sims)
    ours = cli.format_table(expected).splitlines()[2]
    assert ours in printed.out
    # Named after the paper's variant; on 20 images, not beside its row.
    assert model.name == "scan_f30k_t2i_avg"
    assert "not shown" in printed.out and "paper f30k_t2i_avg" not in printed.out
    with open(report) as f:
        result = json.load(f)
    assert result["metrics"] == pytest.approx(expected)
    assert result["paper"] is None


def test_cli_convert_bad_input(tmp_path, capsys):
    missing = str(tmp_path / "missing.pth.tar")
    code = cli.main(
        ["convert", missing, "--vocab", "v.json", "--out", str(tmp_path / "m.keras")]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "missing.pth.tar" in err

    opt = make_options()
    checkpoint = save_checkpoint(tmp_path / "m.pth", make_encoders(opt), opt)
    vocab_path = str(tmp_path / "vocab.json")
    toy_vocabulary(VOCAB_SIZE - 2).save(vocab_path)
    code = cli.main(
        ["convert", checkpoint, "--vocab", vocab_path, "--out", str(tmp_path / "m.keras")]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "vocab_size=30" in err
