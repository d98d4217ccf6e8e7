"""A toy precomputed-features folder, small and learnable, for tests and demos.

A world of `n_concepts` concepts, each with a prototype feature vector and
a noun. An image is `n_regions` distinct concepts, one per region, each
region's feature its prototype plus noise; a caption names some of the
image's concepts. So the right word-region alignment exists, and SCAN can
learn it from matching pairs in seconds.
"""

import itertools
import os

import numpy as np

from scan_keras.data.precomp import SPLITS, check_split_sizes, write_split
from scan_keras.data.vocabulary import Vocabulary

# One noun per concept: concept k is named TOY_WORDS[k].
TOY_WORDS = (
    "dog", "cat", "ball", "tree", "car", "boat", "bird", "hat", "cup", "door",
    "kite", "bike", "horse", "train", "chair", "table", "lamp", "book",
    "clock", "phone", "shoe", "cake", "fish", "sign", "bench", "bus", "plane",
    "bed", "sofa", "tie", "vase", "bowl", "frog", "sheep", "cow", "pizza",
    "bear", "apple", "tent", "fence",
)  # fmt: skip
TOY_SPLIT_SIZES = {"train": 200, "dev": 40, "test": 40}
TOY_MIN_COUNT = 2
NOISE_STD = 0.6

# Syllables of the rare words: each rare word is used once, so it falls
# under TOY_MIN_COUNT and encodes as <unk>.
_SYLLABLES = ("ka", "lo", "mi", "nu", "pe", "ri", "so", "tu")
_RARE_RATE = 0.1
_JOINERS = ("and", "with", ",", "")


def _toy_prototypes(n_concepts, img_dim, seed):
    """The concept prototypes, shared by all splits: `(n_concepts, img_dim)`."""
    rng = np.random.default_rng([seed, len(SPLITS)])
    return rng.normal(size=(n_concepts, img_dim)).astype(np.float32)


def _rare_word(number):
    """The `number`-th rare word: its digits in base 8 as syllables, at least 4."""
    syllables = []
    while number or len(syllables) < 4:
        number, digit = divmod(number, len(_SYLLABLES))
        syllables.append(_SYLLABLES[digit])
    return "".join(syllables)


def _caption(rng, concepts, rare_words):
    """A caption naming 2 to 4 of an image's concepts, in random order."""
    n_named = rng.integers(2, min(4, len(concepts)) + 1)
    named = rng.choice(concepts, size=n_named, replace=False)
    words = []
    for i, concept in enumerate(named):
        if i:
            joiner = _JOINERS[rng.integers(len(_JOINERS))]
            if joiner:
                words.append(joiner)
        if rng.random() < 0.5:
            words.append("a")
        words.append(TOY_WORDS[concept])
    if rng.random() < _RARE_RATE:
        words.insert(rng.integers(len(words) + 1), next(rare_words))
    caption = " ".join(words).replace(" ,", ",")
    if rng.random() < 0.5:
        caption = caption[0].upper() + caption[1:] + "."
    return caption


def write_toy_precomp(
    data_dir,
    n_images=None,
    n_regions=6,
    img_dim=32,
    n_concepts=24,
    seed=0,
):
    """Writes a small learnable dataset in the precomputed-features layout.

    Concept k has a prototype, a seeded standard normal vector of `img_dim`,
    and a noun, `TOY_WORDS[k]`. Each image holds `n_regions` distinct
    concepts in random order; region r's feature is its concept's prototype
    plus N(0, 0.6^2) noise. Each image has 5 captions, each naming 2 to 4
    of its concepts in random order, joined by filler words ("a", "and",
    "with", commas) in mixed case; one caption in ten also holds a rare
    word, used nowhere else.

    The vocabulary is built from the train and dev captions (all written
    splits if neither is written) with `min_count=2`: every noun and filler
    is in it, and the rare words encode as `<unk>`. It is saved as
    `vocab.json` beside the splits. The same arguments write the same bytes.

    Args:
        data_dir: the folder (created if needed).
        n_images: images per split, a dict such as the default
            `{"train": 200, "dev": 40, "test": 40}`; keys from `SPLITS`.
        n_regions: regions per image (at most `n_concepts`, at least 2).
        img_dim: size of the region features.
        n_concepts: concepts in the world (at most `len(TOY_WORDS)`, 40).
        seed: integer seed.

    Returns:
        The `Vocabulary` saved as `vocab.json`.

    Example:

    ```python
    import tempfile
    from scan_keras.data import load_split, write_toy_precomp

    data_dir = tempfile.mkdtemp()
    vocabulary = write_toy_precomp(data_dir, seed=0)
    train = load_split(data_dir, "train")
    train.images.shape  # (200, 6, 32)
    train.captions[0]  # 'bike and clock with kakakaka cake': kakakaka is rare
    ```
    """
    if n_images is None:
        n_images = TOY_SPLIT_SIZES
    n_images = check_split_sizes("n_images", n_images)
    if not isinstance(n_concepts, int) or not 2 <= n_concepts <= len(TOY_WORDS):
        raise ValueError(
            f"Expected `n_concepts` between 2 and {len(TOY_WORDS)} (one noun "
            f"each). Received: n_concepts={n_concepts!r}"
        )
    if not isinstance(n_regions, int) or not 2 <= n_regions <= n_concepts:
        raise ValueError(
            "Expected `n_regions` between 2 and `n_concepts` (each region a "
            f"distinct concept). Received: n_regions={n_regions!r}, "
            f"n_concepts={n_concepts}"
        )
    if not isinstance(img_dim, int) or img_dim < 1:
        raise ValueError(
            "Expected `img_dim` to be a positive integer. "
            f"Received: img_dim={img_dim!r}"
        )

    prototypes = _toy_prototypes(n_concepts, img_dim, seed)
    rare_words = map(_rare_word, itertools.count())
    captions_of = {}
    # In SPLITS order, each split with its own stream: the bytes of a
    # split do not depend on the order of the dict's keys.
    for index, split in enumerate(SPLITS):
        if split not in n_images:
            continue
        rng = np.random.default_rng([seed, index])
        count = n_images[split]
        concepts = np.stack(
            [rng.permutation(n_concepts)[:n_regions] for _ in range(count)]
        )
        noise = rng.normal(scale=NOISE_STD, size=(count, n_regions, img_dim))
        features = (prototypes[concepts] + noise).astype(np.float32)
        captions = [
            _caption(rng, image_concepts, rare_words)
            for image_concepts in concepts
            for _ in range(5)
        ]
        write_split(data_dir, split, features, captions)
        captions_of[split] = captions

    vocab_splits = [s for s in ("train", "dev") if s in captions_of] or list(
        captions_of
    )
    # The package's own tokenizer: generated captions need no nltk, and the
    # same arguments write the same bytes with or without it installed.
    vocabulary = Vocabulary.build(
        [c for s in vocab_splits for c in captions_of[s]],
        min_count=TOY_MIN_COUNT,
        tokenizer="regex",
    )
    vocabulary.save(os.path.join(os.fspath(data_dir), "vocab.json"))
    return vocabulary
