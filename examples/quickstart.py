"""Quick start: SCAN's three components trained on a toy world, in under a minute.

Each "image" is a set of regions whose features are noisy copies of a
concept's prototype; its caption names a few of those concepts in random
order. Nothing tells the model which region a word refers to: trained on
matching pairs alone with the hardest-negative hinge loss, text-to-image
attention learns to put each word's weight on its region.

    python examples/quickstart.py            # about 20 s on 2 CPU cores

(The built-in world with rendered images and the `scan-keras demo`
command come later; this script only needs the core layers.)
"""

import keras
import numpy as np
from keras import ops

from scan_keras.layers import CaptionEncoder, RegionEncoder, StackedCrossAttention
from scan_keras.losses import ContrastiveLoss

N_CONCEPTS, N_REGIONS, FEATURE_DIM, WORDS_PER_CAPTION = 24, 6, 48, 3
START, END, FIRST_WORD = 1, 2, 4  # 0 is padding, 3 is <unk>


def make_pairs(rng, n, prototypes):
    """Images of N_REGIONS concepts and captions naming three of them."""
    concepts = np.stack(
        [rng.choice(N_CONCEPTS, N_REGIONS, replace=False) for _ in range(n)]
    )
    features = prototypes[concepts] + 0.6 * rng.normal(
        size=(n, N_REGIONS, FEATURE_DIM)
    )
    named = np.stack([rng.choice(N_REGIONS, WORDS_PER_CAPTION, replace=False) for _ in range(n)])
    words = np.take_along_axis(concepts, named, axis=1) + FIRST_WORD
    token_ids = np.concatenate(
        [np.full((n, 1), START), words, np.full((n, 1), END)], axis=1
    )
    return features.astype("float32"), token_ids.astype("int32"), named


def build_model():
    features = keras.Input((N_REGIONS, FEATURE_DIM), name="features")
    token_ids = keras.Input((None,), dtype="int32", name="token_ids")
    layers = (
        RegionEncoder(embed_size=64),
        CaptionEncoder(vocab_size=N_CONCEPTS + FIRST_WORD, word_dim=32, embed_size=64),
        StackedCrossAttention("t2i", lambda_softmax=9.0),
    )
    sims = layers[2](layers[0](features), layers[1](token_ids))
    return keras.Model([features, token_ids], sims), layers


def recall_at_1(model, features, token_ids):
    """Caption retrieval R@1: how often an image's best caption is its own."""
    sims = ops.convert_to_numpy(model([features, token_ids]))
    return 100.0 * np.mean(np.argmax(sims, axis=1) == np.arange(len(sims)))


def grounding_accuracy(layers, features, token_ids, named):
    """How often a word's largest attention weight is on its own region."""
    region_encoder, caption_encoder, attention = layers
    _, weights = attention(
        region_encoder(features),
        caption_encoder(token_ids),
        return_attention_scores=True,
    )
    weights = ops.convert_to_numpy(weights)  # (images, captions, words, regions)
    n = len(features)
    own = weights[np.arange(n), np.arange(n)]  # each image with its caption
    chosen = np.argmax(own[:, 1 : 1 + WORDS_PER_CAPTION], axis=-1)
    return 100.0 * np.mean(chosen == named)


def main():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    prototypes = rng.normal(size=(N_CONCEPTS, FEATURE_DIM))
    train = make_pairs(rng, 2048, prototypes)
    test = make_pairs(rng, 100, prototypes)
    model, layers = build_model()
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss=ContrastiveLoss())

    print(f"backend: {keras.backend.backend()}")
    before = (recall_at_1(model, *test[:2]), grounding_accuracy(layers, *test))
    dummy = np.zeros(len(train[0]), "float32")  # the loss reads the diagonal
    model.fit(list(train[:2]), dummy, batch_size=128, epochs=20, verbose=1)
    after = (recall_at_1(model, *test[:2]), grounding_accuracy(layers, *test))

    chance = (1.0, 100.0 / N_REGIONS)
    print(f"\n{'on 100 test pairs':<28}{'untrained':>10}{'trained':>10}{'chance':>10}")
    print(f"{'caption retrieval R@1 (%)':<28}{before[0]:>10.1f}{after[0]:>10.1f}{chance[0]:>10.1f}")
    print(f"{'grounding accuracy (%)':<28}{before[1]:>10.1f}{after[1]:>10.1f}{chance[1]:>10.1f}")


if __name__ == "__main__":
    main()
