"""The main demo: SCAN learns which region each word names, from pairs alone.

`scan-keras demo` runs `run_demo`:

1. generate the built-in world (`scan_keras.data.world`): rendered scenes,
   detector-like regions with features from a frozen CNN, five captions per
   image, and the ground truth of which region each word names, written in
   the precomputed-feature layout the real datasets use;
2. train SCAN (t2i, AVG pooling) and the global-embedding baseline (the
   same encoders and loss, regions and words mean-pooled) with the same
   recipe, `scan_keras.training.train`;
3. evaluate both on the test split: the recalls, and the grounding
   accuracy of their word-to-region attention beside chance;
4. write figures: one test image with each word's attention over its
   regions, and the training curves.

Everything lands in one output folder; nothing is downloaded.
"""

import dataclasses
import os
import time

import keras
import numpy as np

from scan_keras.atomic import read_json, write_json
from scan_keras.chance import chance_metrics
from scan_keras.checks import check_positive_int
from scan_keras.data import load_split
from scan_keras.data.world import (
    WORLD_SPLIT_SIZES,
    load_grounding,
    load_world_images,
    write_world,
)
from scan_keras.evaluation import (
    evaluate,
    grounding_accuracy,
    word_region_attention,
)
from scan_keras.baselines import GlobalEmbedding
from scan_keras.models import SCAN
from scan_keras.presets import Preset
from scan_keras.training import BEST_MODEL, LOG, train

# The paper's t2i AVG recipe, scaled to a small world and two CPU cores: a
# smaller joint space, a higher learning rate, fewer epochs (no decay) and
# batches of 64, and one epoch of the hinge summed over all negatives
# before the hardest negatives take over. With hardest negatives from the
# first step, training on the world is bistable: most seeds stay at the
# collapsed start (every score alike, loss 2 x margin x batch). The
# escape counts of both recipes over seeds are in docs/reproducing.md
# (scripts/demo_seeds.py).
DEMO_PRESET = Preset(
    name="world_t2i_avg",
    dataset="world",
    cross_attn="t2i",
    agg_func="mean",
    lambda_softmax=9.0,
    lambda_lse=6.0,
    learning_rate=1e-3,
    lr_update=10,
    num_epochs=6,
    batch_size=64,
    embed_size=128,
    word_dim=64,
    warmup_epochs=1,
)
MODELS = {"SCAN t2i AVG": SCAN, "global embedding": GlobalEmbedding}
_RUN_DIRS = {"SCAN t2i AVG": "scan", "global embedding": "global"}


def _scaled_sizes(train_images):
    """The world's split sizes with `train_images` training images."""
    sizes = dict(WORLD_SPLIT_SIZES)
    if train_images is not None:
        ratio = train_images / sizes["train"]
        sizes = {
            split: max(20, int(round(n * ratio))) if split != "train" else train_images
            for split, n in sizes.items()
        }
    return sizes


def _example(groundings):
    """A test caption that names at least two regions, for the figure."""
    for c, pairs in enumerate(groundings):
        if len(pairs) >= 2:
            return c
    return 0


# The demo's table over training seeds (scripts/demo_table.py writes it):
# one run's figures are one draw, printed beside the range of the others.
RANGES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_ranges.json")
_ROWS = (
    ("R@1 image -> text", "i2t_r1"),
    ("R@5 image -> text", "i2t_r5"),
    ("R@1 text -> image", "t2i_r1"),
    ("R@5 text -> image", "t2i_r5"),
    ("rsum (of 600)", "rsum"),
    ("grounding accuracy %", "grounding_accuracy"),
    ("attention on the named region %", "attention_mass"),
)


def load_ranges(path=RANGES_FILE):
    """The demo's stored figures over seeds (None if the file is absent)."""
    if not os.path.exists(path):
        return None
    return read_json(path, "the demo's figures over seeds")


def format_results(results, ranges=None):
    """The side-by-side table of `run_demo`'s results, as text.

    Args:
        results: `run_demo`'s result.
        ranges: `load_ranges()`, to print each figure's range over seeds
            beside it (for runs at the default size and epochs).
    """
    names = list(results["models"])

    def cell(name, key):
        text = f"{results['models'][name][key]:.1f}"
        if ranges is not None and name in ranges["models"]:
            low, high = (ranges["models"][name][key][k] for k in ("min", "max"))
            text += f" [{low:.1f}-{high:.1f}]"
        return text

    width = max(len(n) for n in names + ["chance"]) + 2
    if ranges is not None:
        width = max(width, len(cell(names[0], "rsum")) + 2)
    title = "test split" if ranges is None else f"test split [range, {len(ranges['seeds'])} seeds]"
    lines = [f"{title:<34}" + "".join(f"{n:>{width}}" for n in names + ["chance"])]
    for label, key in _ROWS:
        cells = "".join(f"{cell(n, key):>{width}}" for n in names)
        chance = results["chance"].get(key)
        cells += f"{chance:>{width}.1f}" if chance is not None else f"{'':>{width}}"
        lines.append(f"{label:<34}{cells}")
    return "\n".join(lines)


def run_demo(
    out_dir="scan_keras_demo",
    seed=0,
    train_images=None,
    epochs=None,
    verbose=1,
):
    """Generates the world, trains SCAN and the baseline, and reports.

    Args:
        out_dir: the output folder (created; must not hold an earlier demo).
        seed: seeds the world, the weights and the batch order.
        train_images: number of training images (the world's default if
            None); dev and test shrink in proportion.
        epochs: training epochs (`DEMO_PRESET.num_epochs` if None).
        verbose: 1 for progress bars and the printed table, 2 for one line
            per epoch instead of bars (for a log file), 0 for silence.

    Returns:
        A dict with `models` (per model: the test recalls and grounding
        scores), `chance`, `figures` (paths), `model_path`, `seconds` and
        `stage_seconds` (the world, each model's training and evaluation,
        the figures).
    """
    started = time.perf_counter()
    say = print if verbose else (lambda *a, **k: None)
    check_positive_int("train_images", train_images, allow_none=True)
    check_positive_int("epochs", epochs, allow_none=True)
    out_dir = os.fspath(out_dir)
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise ValueError(
            f"The output folder {out_dir} is not empty: choose a new one."
        )
    data_dir = os.path.join(out_dir, "world")
    sizes = _scaled_sizes(train_images)
    say(f"1/4 Generating the world ({sizes['train']} training images) in {data_dir}")
    write_world(data_dir, sizes=sizes, seed=seed)
    # Where the time goes, stage by stage (docs/performance.md).
    stage_seconds = {"world": time.perf_counter() - started}
    test = load_split(data_dir, "test")
    groundings = load_grounding(data_dir, "test")
    say(
        f"    {test.n_images} test images of {test.images.shape[1]} regions, "
        f"features of {test.img_dim} from a frozen CNN"
    )

    preset = DEMO_PRESET
    if epochs is not None:
        preset = dataclasses.replace(preset, num_epochs=epochs)
    results = {"models": {}, "chance": {}}
    trained = {}
    for k, (name, model_class) in enumerate(MODELS.items()):
        say(f"{k + 2}/4 Training {name} for {preset.num_epochs} epochs")
        stage_started = time.perf_counter()
        run_dir = os.path.join(out_dir, _RUN_DIRS[name])
        train(
            preset,
            data_dir,
            run_dir,
            seed=seed,
            verbose=verbose,
            model_class=model_class,
            workers=2,
        )
        # The paper keeps the epoch with the best validation rsum.
        model = keras.saving.load_model(os.path.join(run_dir, BEST_MODEL))
        trained[name] = model
        metrics = evaluate(model, test, verbose=0)
        grounding = grounding_accuracy(model, test, groundings)
        metrics["grounding_accuracy"] = grounding["accuracy"]
        metrics["attention_mass"] = grounding["attention_mass"]
        results["models"][name] = metrics
        stage_seconds[name] = time.perf_counter() - stage_started

    # Chance: a random order of the candidates (in closed form), and a
    # word picking a region at random.
    results["chance"] = {
        key: value
        for key, value in chance_metrics(test.n_images, test.captions_per_image).items()
        if key in ("i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5", "rsum")
    }
    results["chance"]["grounding_accuracy"] = grounding["chance"]
    results["chance"]["attention_mass"] = grounding["chance"]

    say("4/4 Figures")
    stage_started = time.perf_counter()
    figures = _write_figures(out_dir, data_dir, test, groundings, trained["SCAN t2i AVG"])
    stage_seconds["figures"] = time.perf_counter() - stage_started
    results["figures"] = figures
    results["stage_seconds"] = stage_seconds
    results["model_path"] = os.path.join(out_dir, _RUN_DIRS["SCAN t2i AVG"], BEST_MODEL)
    results["seconds"] = time.perf_counter() - started
    write_json(os.path.join(out_dir, "results.json"), results, indent=1)
    say("")
    # The stored ranges belong to the default size and epochs only.
    default = train_images is None and epochs is None
    say(format_results(results, load_ranges() if default else None))
    say(f"\nSCAN model: {results['model_path']}")
    for path in figures.values():
        say(f"figure: {path}")
    say(f"done in {results['seconds']:.0f} s, backend {keras.backend.backend()}")
    return results


def _write_figures(out_dir, data_dir, test, groundings, model):
    from scan_keras.plots import plot_training_curves, plot_word_attention

    images, boxes, _ = load_world_images(data_dir, "test")
    caption = _example(groundings)
    image = test.image_of_caption(np.array([caption]))[0]
    token_ids = model.vocabulary.encode_batch([test.captions[caption]])
    attention = word_region_attention(
        model, test.image_features(np.array([image])), token_ids
    )[0]
    words = model.vocabulary.tokenize(test.captions[caption])
    # Token position w + 1 holds word w: <start> comes first.
    figures = {
        "attention": os.path.join(out_dir, "attention.png"),
        "training": os.path.join(out_dir, "training.png"),
    }
    plot_word_attention(
        images[image],
        boxes[image],
        words,
        attention[1 : 1 + len(words)],
        path=figures["attention"],
        title=f"SCAN t2i attention: {test.captions[caption]!r}",
    )
    plot_training_curves(
        {name: os.path.join(out_dir, run, LOG) for name, run in _RUN_DIRS.items()},
        path=figures["training"],
    )
    return figures
