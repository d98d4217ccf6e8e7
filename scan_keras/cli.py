"""The `scan-keras` command: a thin layer over the package's modules.

    scan-keras demo --out scan_keras_demo
    scan-keras train --preset f30k_t2i_avg --data-dir data/f30k_precomp --out runs/t2i
    scan-keras evaluate --data-dir data/f30k_precomp --split test --protocol 1k \\
        runs/t2i/model_best.keras
    scan-keras convert model_best.pth.tar --vocab f30k_precomp_vocab.json --out f30k.keras
"""

import argparse
import json
import os
import sys

from scan_keras import cli_data, cli_explore, cli_index
from scan_keras.evaluation import PROTOCOLS
from scan_keras.presets import PRESETS


def _preset_help():
    """The presets, one line per dataset, from `PRESETS` itself."""
    by_dataset = {}
    for name, preset in PRESETS.items():
        by_dataset.setdefault(preset.dataset, []).append(name)
    lines = "".join(f"  {'  '.join(names)}\n" for names in by_dataset.values())
    return (
        "presets (dataset_formulation_pooling; t2i = the paper's Text-Image,\n"
        "i2t = Image-Text; avg = AVG pooling, lse = LogSumExp):\n" + lines
    )


DATA_HELP = """\
The data folder is the released precomputed layout, e.g. f30k_precomp/:
  {split}_ims.npy   float32 (n_images, 36, 2048) region features
  {split}_caps.txt  one caption per line, 5 per image, in image order
with splits train, dev, test (and testall for COCO's 5K test set).
"""

_RECALLS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")


def _parser():
    parser = argparse.ArgumentParser(
        prog="scan-keras",
        description="Stacked Cross Attention for Image-Text Matching "
        "(Lee et al., ECCV 2018) in Keras 3. The backend is chosen by the "
        "KERAS_BACKEND environment variable (jax is the fastest on a GPU).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo",
        help="the main demo: SCAN on the built-in world, beside a global baseline",
        description="Generate the built-in world (rendered scenes, region "
        "features from a frozen CNN, captions with the ground truth of "
        "which region each word names), train SCAN and the global-embedding "
        "baseline on it, and print their test recalls and grounding "
        "accuracy side by side. Writes the models, an attention figure and "
        "the training curves to OUT. A few minutes on two CPU cores.",
    )
    demo.add_argument("--out", default="scan_keras_demo", help="output folder (scan_keras_demo)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (0)")
    demo.add_argument(
        "--train-images", type=int,
        help="training images (the world's default); dev and test scale along",
    )
    demo.add_argument("--epochs", type=int, help="training epochs (the demo's default)")
    _add_verbose(demo)

    train = commands.add_parser(
        "train",
        help="train a model with one of the paper's presets",
        description="Train SCAN with a preset's recipe (Adam as PyTorch "
        "steps it, gradient clipping 2.0, learning rate divided by 10 mid-way, hardest-negative "
        "hinge loss). Validation recall is computed after every epoch and the "
        "best model kept as OUT/model_best.keras. Run the same command again "
        "to resume an interrupted run.",
        epilog=_preset_help() + "\n" + DATA_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("--preset", required=True, help="a preset name, see below")
    train.add_argument("--data-dir", required=True, help="precomputed-feature folder")
    train.add_argument("--out", required=True, help="output folder of the run")
    train.add_argument("--epochs", type=int, help="number of epochs (preset's default)")
    train.add_argument("--batch-size", type=int, help="pairs per batch (default 128)")
    train.add_argument(
        "--vocab",
        help="vocabulary JSON (word2idx/idx2word) or the reference's .pkl; default DATA_DIR/vocab.json "
        "or one built from the train and dev captions",
    )
    train.add_argument("--seed", type=int, default=0, help="random seed (0)")
    train.add_argument(
        "--embed-size", type=int, help="joint space size (1024); smaller for quick runs"
    )
    train.add_argument("--word-dim", type=int, help="word embedding size (300)")
    train.add_argument(
        "--product-dtype", choices=("bfloat16",),
        help="multiply the attention's products in bfloat16 (float32 sums): "
        "faster on GPUs, relative error about 1e-3",
    )
    train.add_argument(
        "--torch-compile", action="store_true",
        help="PyTorch backend: compile the attention with torch.compile",
    )
    train.add_argument(
        "--global-loss-weight", type=float,
        help="add this times the hinge loss on mean-pooled regions and words "
        "(a second head: the model then also serves as the dual encoder of "
        "`scan-keras index build`); 0 (the paper's) by default",
    )
    train.add_argument(
        "--workers", type=int, default=4,
        help="threads reading the next batches while one trains (4)",
    )
    resume = train.add_mutually_exclusive_group()
    resume.add_argument(
        "--restart", action="store_true",
        help="start the run in OUT again from epoch 1, discarding its log, "
        "backup and best model (for a run whose backup is lost)",
    )
    resume.add_argument(
        "--resume-from-best", action="store_true",
        help="resume the run in OUT from its best model and that model's epoch "
        "(for a run whose backup is lost)",
    )
    train.add_argument(
        "--tokenizer",
        help="how a vocabulary built here splits captions: nltk (default where "
        "nltk is installed), nltk_punkt or regex (default otherwise); a "
        "vocabulary file keeps its own",
    )
    _add_verbose(train)
    train.add_argument(
        "--optimizer", default="torch_adam",
        help="torch_adam (default: the steps of torch.optim.Adam, as the "
        "reference code), torch_adam_legacy (epsilon placed as PyTorch did "
        "before 2019) or keras_adam (keras.optimizers.Adam)",
    )

    evaluate = commands.add_parser(
        "evaluate",
        help="recall of one model, or of an ensemble, on a split",
        description="Compute image-to-text and text-to-image R@1/5/10, median "
        "and mean rank and rsum of MODEL on a split, printed beside the "
        "paper's numbers and written as JSON. Several models form an "
        "ensemble: their similarity matrices are averaged.",
        epilog="protocols: 1k = Flickr30K test (1000 images); 5fold1k = COCO 1K, "
        "the mean over 5 folds of testall; 5k = all 5000 images of COCO "
        "testall.\n\n" + DATA_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument("models", nargs="+", metavar="MODEL", help=".keras model file(s)")
    evaluate.add_argument("--data-dir", required=True, help="precomputed-feature folder")
    evaluate.add_argument("--split", default="test", help="split to evaluate (test)")
    evaluate.add_argument(
        "--protocol", default="1k", choices=PROTOCOLS,
        help="evaluation protocol (1k)",
    )
    evaluate.add_argument(
        "--paper",
        help="the paper's row to show beside ours: a preset or ensemble name "
        "(default: guessed from the models' names)",
    )
    evaluate.add_argument(
        "--json", help="where to write the results (default: beside the first model)"
    )
    evaluate.add_argument("--batch-size", type=int, default=128, help="images encoded at a time")
    cli_index.add_evaluate_options(evaluate)

    convert = commands.add_parser(
        "convert",
        help="import a model trained with the reference PyTorch code",
        description="Convert a checkpoint of the authors' PyTorch SCAN code "
        "(model_best.pth.tar) into a .keras model with the same options, "
        "weights and vocabulary, which `scan-keras evaluate` accepts. The "
        "file is read safely (torch.load with weights_only=True); this needs "
        'PyTorch: pip install "scan-keras[convert]".',
    )
    convert.add_argument("checkpoint", metavar="CHECKPOINT", help="the .pth.tar file")
    convert.add_argument(
        "--vocab", required=True,
        help="the vocabulary the model was trained with: the JSON (word2idx/idx2word) or the reference's .pkl",
    )
    convert.add_argument("--out", required=True, help="the .keras file to write")
    convert.add_argument(
        "--tokenizer", default="nltk",
        help="how the model splits captions, when the vocabulary file names "
        "no tokenizer (the authors' files do not): nltk (default: nltk's word "
        "tokenizer, as the reference code), nltk_punkt (with its sentence "
        "splitter; needs nltk's punkt_tab data) or regex (the package's own, "
        "close to nltk, without nltk)",
    )
    cli_data.add_commands(commands)
    cli_index.add_commands(commands)
    cli_explore.add_commands(commands)
    return parser


def _add_verbose(parser):
    parser.add_argument(
        "--verbose", type=int, choices=(0, 1, 2),
        help="0 silent, 1 progress bars, 2 one line per epoch (default: 1 on a "
        "terminal, 2 when the output goes to a file or a pipe)",
    )


def _verbosity(args):
    """`--verbose`, or what fits where the output goes: redrawn progress
    bars in a log file are megabytes of escape codes."""
    if args.verbose is not None:
        return args.verbose
    return 1 if sys.stdout.isatty() else 2


def _paper_row(name, protocol):
    """The paper's recalls for a preset or ensemble name, or None."""
    from scan_keras.presets import PAPER_ENSEMBLES

    if name in PRESETS:
        return PRESETS[name].paper.get(protocol)
    return PAPER_ENSEMBLES.get(name, {}).get(protocol)


def _guess_paper_name(models):
    from scan_keras.layers import StackedCrossAttention
    from scan_keras.presets import PAPER_ENSEMBLES

    # The paper's rows are SCAN's: a model of a preset with its attention.
    names = [
        m.preset
        for m in models
        if getattr(m, "preset", None)
        and isinstance(getattr(m, "similarity_layer", None), StackedCrossAttention)
    ]
    if len(names) != len(models):
        return None
    if len(names) == 1:
        return names[0]
    # Ensembles are named like "f30k_t2i_avg+i2t_lse".
    dataset = names[0].split("_")[0]
    if any(not n.startswith(dataset + "_") for n in names):
        return None
    parts = sorted(n.split("_", 1)[1] for n in names)
    # The paper's order of the parts, where the paper has the ensemble.
    for known in PAPER_ENSEMBLES:
        known_dataset, known_parts = known.split("_", 1)
        if known_dataset == dataset and sorted(known_parts.split("+")) == parts:
            return known
    return f"{dataset}_" + "+".join(parts)


def format_table(ours, paper=None, paper_name=None):
    """The recall table, ours beside the paper's row when there is one."""
    header = (
        f"{'':<22}{'i2t R@1':>8}{'R@5':>6}{'R@10':>6}{'medr':>6}"
        f"{'t2i R@1':>9}{'R@5':>6}{'R@10':>6}{'medr':>6}{'rsum':>8}"
    )
    lines = [header, "-" * len(header)]

    def row(label, m):
        def get(key, fmt):
            return format(m[key], fmt) if key in m else "-"

        return (
            f"{label:<22}{get('i2t_r1', '8.1f'):>8}{get('i2t_r5', '6.1f'):>6}"
            f"{get('i2t_r10', '6.1f'):>6}{get('i2t_medr', '6.1f'):>6}"
            f"{get('t2i_r1', '9.1f'):>9}{get('t2i_r5', '6.1f'):>6}"
            f"{get('t2i_r10', '6.1f'):>6}{get('t2i_medr', '6.1f'):>6}"
            f"{get('rsum', '8.1f'):>8}"
        )

    lines.append(row("ours", ours))
    if paper is not None:
        lines.append(row(f"paper {paper_name}"[:22], paper))
    return "\n".join(lines)


def _train(args):
    from scan_keras.training import BEST_MODEL, train

    names = ("embed_size", "word_dim", "product_dtype", "torch_compile", "global_loss_weight")
    overrides = {name: getattr(args, name) for name in names if getattr(args, name)}
    model, _ = train(
        args.preset,
        args.data_dir,
        args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        vocab_path=args.vocab,
        seed=args.seed,
        workers=args.workers,
        optimizer=args.optimizer,
        tokenizer=args.tokenizer,
        verbose=_verbosity(args),
        resume_from="restart" if args.restart else "best" if args.resume_from_best else None,
        **overrides,
    )
    best = os.path.join(args.out, BEST_MODEL)
    record = best + ".json"
    if os.path.exists(record):
        with open(record) as f:
            metrics = json.load(f)
        print(f"\nbest validation model (epoch {metrics['epoch']}): {best}")
        print(format_table(metrics))
    return 0


def _grounding(models, data_dir, split):
    """Grounding scores where the data hold ground truth (the built-in world)."""
    from scan_keras.data.world import load_grounding
    from scan_keras.evaluation import grounding_accuracy

    path = os.path.join(data_dir, f"{split.split}_grounding.json")
    if len(models) != 1 or not os.path.exists(path):
        return None
    return grounding_accuracy(models[0], split, load_grounding(data_dir, split.split))


def _evaluate(args):
    import keras

    from scan_keras.data import load_split
    from scan_keras.evaluation import PROTOCOL_IMAGES, evaluate

    for path in args.models:
        if not os.path.exists(path):
            raise FileNotFoundError(f"No such model file: {path}")
    split = load_split(args.data_dir, args.split)
    expected = PROTOCOL_IMAGES[args.protocol]
    if args.protocol != "1k" and split.n_images != expected:
        raise ValueError(
            f"--protocol {args.protocol} needs the {expected} images of COCO "
            f"testall; {args.data_dir} split {split.split!r} has "
            f"{split.n_images}. --protocol 1k scores all its images at once."
        )
    models = [keras.saving.load_model(path, compile=False) for path in args.models]
    print(
        f"evaluating {len(models)} model(s) on {split.split} "
        f"({split.n_images} images, {split.n_captions} captions), "
        f"protocol {args.protocol}, backend {keras.backend.backend()}"
    )
    if args.shortlist:  # the two-stage search's recalls
        metrics = cli_index.shortlist_evaluate(args, models, split)
    else:
        metrics = evaluate(models, split, args.protocol, batch_size=args.batch_size)
    paper_name = args.paper or _guess_paper_name(models)
    paper = _paper_row(paper_name, args.protocol) if paper_name else None
    if split.n_images != expected:
        print(
            f"on all {split.n_images} images at once, not the {expected} of the "
            "paper's protocol: the paper's row is not shown beside it"
        )
        paper_name = paper = None
    print(format_table(metrics, paper, paper_name))
    grounding = _grounding(models, args.data_dir, split)
    if grounding is not None:
        print(
            f"grounding accuracy {grounding['accuracy']:.1f}% of "
            f"{grounding['n_words']} words (chance {grounding['chance']:.1f}%), "
            f"attention on the named region {grounding['attention_mass']:.1f}%"
        )
    out = args.json or os.path.join(
        os.path.dirname(os.path.abspath(args.models[0])),
        f"eval_{args.split}_{args.protocol}.json",
    )
    result = {
        "models": [os.path.abspath(p) for p in args.models],
        "data_dir": os.path.abspath(args.data_dir),
        "split": args.split,
        "protocol": args.protocol,
        "metrics": metrics,
        "paper": {"name": paper_name, "metrics": paper} if paper else None,
        "grounding": grounding,
    }
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"written to {out}")
    return 0


def _convert(args):
    if not args.out.endswith(".keras"):
        raise ValueError(f"--out must be a .keras file. Received: {args.out}")
    try:
        from scan_keras.convert import load_official_checkpoint

        model = load_official_checkpoint(
            args.checkpoint, vocabulary=args.vocab, tokenizer=args.tokenizer
        )
    except ImportError as error:  # no PyTorch: one line, as for bad input
        print(f"scan-keras convert: error: {error}", file=sys.stderr)
        return 2
    folder = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(folder, exist_ok=True)
    model.save(args.out)
    attention = model.attention
    print(
        f"converted {args.checkpoint}: {attention.cross_attn}, "
        f"agg_func={attention.agg_func}, lambda_softmax={attention.lambda_softmax}"
        + (
            f", lambda_lse={attention.lambda_lse}"
            if attention.agg_func == "logsumexp"
            else ""
        )
        + f", raw_feature_norm={attention.raw_feature_norm}, "
        f"{len(model.vocabulary)} words, tokenizer {model.vocabulary.tokenizer}"
    )
    print(f"written to {args.out} (model name {model.name})")
    return 0


def _demo(args):
    from scan_keras.demo import run_demo

    run_demo(
        args.out,
        seed=args.seed,
        train_images=args.train_images,
        epochs=args.epochs,
        verbose=_verbosity(args),
    )
    return 0


def main(argv=None):
    args = _parser().parse_args(argv)
    run = {
        "demo": _demo,
        "train": _train,
        "evaluate": _evaluate,
        "convert": _convert,
    }.get(args.command) or args.handler
    try:
        return run(args)
    except (OSError, ValueError) as error:
        # Bad input, a full disk, a folder in use: one clear line, not a
        # traceback (OSError's message names the file).
        print(f"scan-keras {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
