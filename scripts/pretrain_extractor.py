"""Pre-trains the built-in world's region feature extractor, then freezes it.

Bottom-up attention, where SCAN's features come from, trained its detector
on Visual Genome's objects and attributes, and SCAN then used it frozen.
This script does the same at toy scale: it draws scenes of the world from a
seed of its own (never a stream that `make_world` uses), crops every
proposed region, and trains the small CNN of `scan_keras.data.extractor`
with four heads on its feature layer:

- shape (6 classes), colour (8) and size (2) of object regions;
- kind of region (3): an object's box, part of an object, or background.

Then it keeps the layers up to the feature layer, saves them to
`scan_keras/data/extractor_weights.npz` with their metadata (crop size, the
seed, the auxiliary accuracies on held-out scenes), and checks that the
NumPy forward pass gives the Keras model's features.

    KERAS_BACKEND=jax python scripts/pretrain_extractor.py

takes about two minutes on 2 CPU cores. Any backend works; the shipped
weights were made with the defaults below on JAX.
"""

import argparse
import json
import os
import time

import keras
import numpy as np
from keras import ops

from scan_keras.data import extractor as extractor_lib
from scan_keras.data.world import (
    COLOURS,
    REGION_OBJECT,
    SHAPES,
    SIZES,
    render_split,
)

SEED = 1803  # the paper's arXiv number, 1803.08024
# Stream keys of the auxiliary scenes: make_world uses [seed, 0..3] for its
# splits, so [seed, 1000] and [seed, 1001] never meet a world split.
TRAIN_STREAM, HELD_OUT_STREAM = 1000, 1001
CROP_SIZE = 16
CHANNELS = (16, 32, 64)
FEATURE_DIM = 128
HEADS = {"shape": len(SHAPES), "colour": len(COLOURS), "size": len(SIZES), "kind": 3}


def region_data(n_images, stream, seed):
    """Crops, geometry and labels of every region of `n_images` scenes.

    Labels are -1 where they do not apply: shape, colour and size of a
    region that is not an object's box.
    """
    world = render_split(n_images, np.random.default_rng([seed, stream]))
    crops = extractor_lib.crop_regions(world.images, world.boxes, CROP_SIZE)
    geometry = extractor_lib.box_geometry(world.boxes, world.images.shape[1:3])
    labels = {name: np.full(world.boxes.shape[:2], -1, np.int32) for name in HEADS}
    labels["kind"][:] = world.region_kinds
    values = {"shape": SHAPES, "colour": list(COLOURS), "size": SIZES}
    for i, objects in enumerate(world.objects):
        for r, k in enumerate(world.region_objects[i]):
            if k >= 0:
                for name, names in values.items():
                    labels[name][i, r] = names.index(objects[k][name])
    inputs = {
        "crops": crops.reshape((-1,) + crops.shape[2:]).astype("float32"),
        "geometry": geometry.reshape(-1, geometry.shape[-1]).astype("float32"),
    }
    return inputs, {name: y.reshape(-1) for name, y in labels.items()}


def masked_sparse_crossentropy(y_true, y_pred):
    """Cross-entropy from logits, zero where the label is -1 (not applicable)."""
    y_true = ops.reshape(y_true, (-1,))
    mask = ops.cast(y_true >= 0, y_pred.dtype)
    loss = keras.losses.sparse_categorical_crossentropy(
        ops.maximum(y_true, 0), y_pred, from_logits=True
    )
    return loss * mask


def accuracies(model, inputs, labels):
    """Held-out accuracy of each head, on the regions its labels cover."""
    logits = model.predict(inputs, batch_size=1024, verbose=0)
    result = {}
    for name in HEADS:
        keep = labels[name] >= 0
        predicted = np.argmax(logits[name], axis=-1)
        result[name] = float(np.mean(predicted[keep] == labels[name][keep]))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default=extractor_lib.WEIGHTS_PATH)
    parser.add_argument("--images", type=int, default=3000,
                        help="auxiliary training scenes (10 regions each)")
    parser.add_argument("--held-out", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    keras.utils.set_random_seed(args.seed)

    start = time.perf_counter()
    x_train, y_train = region_data(args.images, TRAIN_STREAM, args.seed)
    x_held, y_held = region_data(args.held_out, HELD_OUT_STREAM, args.seed)
    n_objects = int((y_train["kind"] == REGION_OBJECT).sum())
    print(f"auxiliary data: {len(y_train['kind'])} training regions "
          f"({n_objects} objects), {len(y_held['kind'])} held out, "
          f"{time.perf_counter() - start:.1f} s")

    backbone = extractor_lib.build_keras_extractor(CROP_SIZE, CHANNELS, FEATURE_DIM)
    features = backbone.output
    heads = {name: keras.layers.Dense(n, name=name)(features)
             for name, n in HEADS.items()}
    model = keras.Model(backbone.input, heads)
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss={name: masked_sparse_crossentropy for name in HEADS},
    )
    start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=128, epochs=args.epochs,
              shuffle=True, verbose=2)
    train_seconds = time.perf_counter() - start
    reached = accuracies(model, x_held, y_held)
    print(f"training: {train_seconds:.0f} s on backend {keras.backend.backend()}")
    print("held-out accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in reached.items()))

    weights = {}
    for layer in extractor_lib.CONV_LAYERS + (extractor_lib.FEATURE_LAYER,):
        kernel, bias = backbone.get_layer(layer).get_weights()
        weights[f"{layer}/kernel"], weights[f"{layer}/bias"] = kernel, bias
    metadata = {
        "crop_size": CROP_SIZE,
        "channels": list(CHANNELS),
        "feature_dim": FEATURE_DIM,
        "geometry": "x0, y0, x1, y1, width, height in eighths of the image",
        "pixels": "bilinear crop, value / 255 - 0.5",
        "script": "scripts/pretrain_extractor.py",
        "seed": args.seed,
        "streams": [TRAIN_STREAM, HELD_OUT_STREAM],
        "aux_images": args.images,
        "aux_held_out_images": args.held_out,
        "epochs": args.epochs,
        "aux_accuracy": {k: round(v, 4) for k, v in reached.items()},
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
    }
    extractor = extractor_lib.RegionFeatureExtractor(weights, metadata)
    extractor.save(args.output)

    # The NumPy forward pass must give the Keras model's features.
    reloaded = extractor_lib.RegionFeatureExtractor.load(args.output)
    sample = {k: v[:512] for k, v in x_held.items()}
    expected = backbone.predict(sample, verbose=0)
    got = reloaded.forward(sample["crops"], sample["geometry"])
    difference, scale = np.max(np.abs(got - expected)), np.max(np.abs(expected))
    print(f"NumPy vs Keras features: max abs difference {difference:.2e} "
          f"(largest feature {scale:.1f})")
    print(f"saved {args.output} ({os.path.getsize(args.output) / 1024:.0f} KiB)")
    print(json.dumps(metadata["aux_accuracy"]))


if __name__ == "__main__":
    main()
