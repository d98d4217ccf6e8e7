"""The frozen region feature extractor of the built-in world.

SCAN never sees pixels: its region features come from a detector pre-trained
on another task (bottom-up attention: a Faster R-CNN trained on Visual
Genome's objects and attributes) and then frozen. The built-in world
(`scan_keras.data.world`) keeps that arrangement at toy scale:

1. each region's box is cropped from the rendered image and resized
   (bilinear) to `crop_size x crop_size` (`crop_regions`);
2. a small CNN maps the crop, together with the box's place and extent in
   the image (`box_geometry`), to a feature vector (`RegionFeatureExtractor`).

The crop is resized to a fixed size, as a detector's RoI pooling does, so
the pixels alone no longer tell a small object from a large one; the box
geometry restores that, as the spatial features of many detectors do.

The CNN was pre-trained by `scripts/pretrain_extractor.py` on crops of
scenes drawn from a seed of its own, to classify shape, colour and size of
object regions and whether a region is an object, part of one or
background; then its layers up to the feature layer were saved in
`extractor_weights.npz`, shipped with the package. Here the forward pass is
NumPy, in float64: the world depends on NumPy alone and has the same bytes
on every Keras backend. `build_keras_extractor` builds the same network in
Keras (for the pre-training script, and to test the NumPy forward pass).

The network, for crops `(N, S, S, 3)` and geometry `(N, 6)`:

```
crops -> [conv 3x3 "same" + ReLU -> max-pool 2x2] x 3 -> flatten --+
geometry ------------------------------------------------------------+-> concat
    -> dense + ReLU ("feature")  ->  (N, feature_dim)
```
"""

import functools
import json
import os
import zipfile

import numpy as np

from scan_keras.data.files import write_npz

WEIGHTS_PATH = os.path.join(os.path.dirname(__file__), "extractor_weights.npz")
# Box geometry per region: x0, y0, x1, y1, width, height, in eighths of
# the image: on the scale of the convolutions' activations, so that a
# few epochs of training can read an object's size from its box.
GEOMETRY_DIM = 6
_GEOMETRY_UNITS = 8
CONV_LAYERS = ("conv_1", "conv_2", "conv_3")
FEATURE_LAYER = "feature"
# Crops at a time in `RegionFeatureExtractor.__call__`: the first layer's
# patches of 512 crops of 16 x 16 take 28 MB in float64.
_CHUNK = 512


def check_boxes(images, boxes):
    """Checks images `(n, H, W, 3)` and boxes `(n, R, 4)` against each other.

    Returns:
        `(images, boxes)` as NumPy arrays.

    Raises:
        ValueError: a shape is wrong, the boxes are not integers, or a box
            is empty or reaches outside its image.
    """
    images = np.asarray(images)
    boxes = np.asarray(boxes)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            "Expected `images` of shape (n_images, height, width, 3). "
            f"Received: shape {images.shape}"
        )
    if (
        boxes.ndim != 3
        or boxes.shape[-1] != 4
        or boxes.shape[0] != images.shape[0]
        or not np.issubdtype(boxes.dtype, np.integer)
    ):
        raise ValueError(
            "Expected integer `boxes` of shape (n_images, n_regions, 4), one "
            f"row of boxes per image of `images` {images.shape}. Received: "
            f"shape {boxes.shape}, dtype {boxes.dtype}"
        )
    height, width = images.shape[1:3]
    x0, y0, x1, y1 = np.moveaxis(boxes, -1, 0)
    bad = (x0 < 0) | (y0 < 0) | (x1 > width) | (y1 > height) | (x1 <= x0) | (y1 <= y0)
    if bad.any():
        image, region = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            "Expected every box x0, y0, x1, y1 to be non-empty and inside the "
            f"{width} x {height} image (x1, y1 exclusive). Received: "
            f"boxes[{image}, {region}]={boxes[image, region].tolist()}"
        )
    return images, boxes


def box_geometry(boxes, image_shape):
    """Where each box lies in its image, as the extractor's second input.

    Args:
        boxes: integer array `(..., 4)`: x0, y0, x1, y1 in pixels, x1 and y1
            exclusive.
        image_shape: `(height, width)` of the images.

    Returns:
        float64 array `(..., 6)`: x0, y0, x1, y1, width and height of each
        box, in eighths of the image's width (x) or height (y).
    """
    height, width = image_shape
    boxes = np.asarray(boxes, dtype=np.float64)
    x0, y0, x1, y1 = np.moveaxis(boxes, -1, 0)
    scaled = np.stack([x0, y0, x1, y1, x1 - x0, y1 - y0], -1)
    return scaled * _GEOMETRY_UNITS / np.array([width, height] * 3, np.float64)


def crop_regions(images, boxes, crop_size):
    """Crops each box and resizes it, bilinearly, to `crop_size` squared.

    Sample points sit at pixel centres (the "half-pixel" convention of
    `keras.ops.image.resize`), and only pixels inside the box are read: a
    sample beyond the outermost pixel centres takes the edge pixel.

    Args:
        images: uint8 array `(n_images, H, W, 3)`.
        boxes: integer array `(n_images, n_regions, 4)`: x0, y0, x1, y1 in
            pixels, x1 and y1 exclusive.
        crop_size: side of the resized crops.

    Returns:
        float64 array `(n_images, n_regions, crop_size, crop_size, 3)`, the
        pixels scaled to [-0.5, 0.5].

    Example:

    ```python
    import numpy as np
    from scan_keras.data.extractor import crop_regions

    images = np.zeros((1, 8, 8, 3), "uint8")
    images[0, 2:4, 2:4] = 255
    crops = crop_regions(images, np.array([[[2, 2, 4, 4], [0, 0, 8, 8]]]), 4)
    crops.shape  # (1, 2, 4, 4, 3)
    crops[0, 0].min()  # 0.5: the first box holds only white pixels
    ```
    """
    images, boxes = check_boxes(images, boxes)
    n_images, n_regions = boxes.shape[:2]
    flat = boxes.reshape(-1, 4).astype(np.int64)
    owner = np.repeat(np.arange(n_images), n_regions)
    steps = (np.arange(crop_size) + 0.5) / crop_size

    def axis(start, stop):
        # Sample coordinates along one axis: (n_crops, crop_size) each.
        length = (stop - start)[:, None]
        coords = start[:, None] + steps * length - 0.5
        coords = np.clip(coords, start[:, None], (stop - 1)[:, None])
        low = np.floor(coords).astype(np.int64)
        high = np.minimum(low + 1, (stop - 1)[:, None])
        return low, high, coords - low

    x_low, x_high, x_frac = axis(flat[:, 0], flat[:, 2])
    y_low, y_high, y_frac = axis(flat[:, 1], flat[:, 3])
    n = owner[:, None, None]

    def gather(ys, xs):
        return images[n, ys[:, :, None], xs[:, None, :]].astype(np.float64)

    wx = x_frac[:, None, :, None]
    wy = y_frac[:, :, None, None]
    top = gather(y_low, x_low) * (1 - wx) + gather(y_low, x_high) * wx
    bottom = gather(y_high, x_low) * (1 - wx) + gather(y_high, x_high) * wx
    crops = (top * (1 - wy) + bottom * wy) / 255.0 - 0.5
    return crops.reshape(n_images, n_regions, crop_size, crop_size, 3)


def _conv3x3(x, kernel):
    """A 3x3 convolution with zero padding ("same"), as one matmul; no bias."""
    n, height, width, channels = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    # Patch channels in (dy, dx, channel) order: Keras' kernel layout
    # (3, 3, in, out) flattens the same way.
    patches = np.concatenate(
        [
            padded[:, dy : dy + height, dx : dx + width, :]
            for dy in range(3)
            for dx in range(3)
        ],
        axis=-1,
    )
    out = patches.reshape(-1, 9 * channels) @ kernel.reshape(9 * channels, -1)
    return out.reshape(n, height, width, -1)


def _max_pool2(x):
    """2x2 max-pooling, stride 2, odd edges dropped (Keras' "valid")."""
    x = x[:, : x.shape[1] // 2 * 2, : x.shape[2] // 2 * 2]
    return np.maximum(
        np.maximum(x[:, 0::2, 0::2], x[:, 0::2, 1::2]),
        np.maximum(x[:, 1::2, 0::2], x[:, 1::2, 1::2]),
    )


class RegionFeatureExtractor:
    """The frozen CNN that turns region crops into features, in NumPy.

    Args:
        weights: dict of float arrays: `"{layer}/kernel"` and
            `"{layer}/bias"` for the layers `conv_1`, `conv_2`, `conv_3`
            (kernels `(3, 3, in, out)`) and `feature` (kernel
            `(flattened + 6, feature_dim)`), as `build_keras_extractor`
            names them.
        metadata: dict saved with the weights; must hold `"crop_size"`.

    Attributes:
        weights: the weights as given, converted to float64.
        metadata: the metadata dict (seed, auxiliary accuracies, ...).
        crop_size: side of the resized crops.
        feature_dim: size of each region's feature vector.

    Example:

    ```python
    from scan_keras.data import make_world
    from scan_keras.data.extractor import RegionFeatureExtractor

    extractor = RegionFeatureExtractor.load()  # the shipped weights
    world = make_world({"test": 4}, extractor=extractor)
    features = extractor(world["test"].images, world["test"].boxes)
    features.shape  # (4, 10, extractor.feature_dim)
    ```
    """

    def __init__(self, weights, metadata):
        if not isinstance(metadata, dict) or "crop_size" not in metadata:
            raise ValueError(
                "Expected `metadata` to be a dict holding 'crop_size'. "
                f"Received: metadata={metadata!r}"
            )
        crop_size = metadata["crop_size"]
        if not isinstance(crop_size, int) or crop_size < 2 ** len(CONV_LAYERS):
            raise ValueError(
                f"Expected metadata['crop_size'] to be an integer of at least "
                f"{2 ** len(CONV_LAYERS)}. Received: {crop_size!r}"
            )
        names = [
            f"{layer}/{part}"
            for layer in CONV_LAYERS + (FEATURE_LAYER,)
            for part in ("kernel", "bias")
        ]
        missing = [name for name in names if name not in weights]
        if missing:
            raise ValueError(
                f"The extractor's weights lack {missing}. Received keys: "
                f"{sorted(weights)}"
            )
        self.weights = {name: np.asarray(weights[name], np.float64) for name in names}
        channels = 3
        for layer in CONV_LAYERS:
            kernel = self.weights[f"{layer}/kernel"]
            if kernel.shape[:3] != (3, 3, channels) or kernel.ndim != 4:
                raise ValueError(
                    f"Expected {layer}/kernel of shape (3, 3, {channels}, out). "
                    f"Received: shape {kernel.shape}"
                )
            channels = kernel.shape[3]
        side = crop_size // 2 ** len(CONV_LAYERS)
        flat = side * side * channels + GEOMETRY_DIM
        kernel = self.weights[f"{FEATURE_LAYER}/kernel"]
        if kernel.ndim != 2 or kernel.shape[0] != flat:
            raise ValueError(
                f"Expected {FEATURE_LAYER}/kernel of shape ({flat}, feature_dim) "
                f"for crops of {crop_size}. Received: shape {kernel.shape}"
            )
        for name in names:
            if name.endswith("/bias"):
                kernel = self.weights[name.replace("/bias", "/kernel")]
                if self.weights[name].shape != (kernel.shape[-1],):
                    raise ValueError(
                        f"Expected {name} of shape ({kernel.shape[-1]},). "
                        f"Received: shape {self.weights[name].shape}"
                    )
        self.metadata = dict(metadata)
        self.crop_size = crop_size
        self.feature_dim = int(kernel.shape[1])

    @classmethod
    def load(cls, path=None):
        """Reads weights and metadata saved by `save`.

        Args:
            path: the `.npz` file; the weights shipped with the package if
                None.

        Returns:
            A `RegionFeatureExtractor`.

        Raises:
            FileNotFoundError: no such file.
            ValueError: the file is not an `.npz` of extractor weights.
        """
        path = WEIGHTS_PATH if path is None else os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"Extractor weights not found: {path} (made by "
                "scripts/pretrain_extractor.py)"
            )
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
            metadata = json.loads(str(arrays.pop("metadata")))
        except (ValueError, OSError, KeyError, zipfile.BadZipFile) as err:
            raise ValueError(
                f"{path} is not a file of extractor weights: {err}"
            ) from None
        return cls(arrays, metadata)

    def save(self, path):
        """Writes the weights (float32) and metadata to an `.npz` file."""
        arrays = {name: w.astype(np.float32) for name, w in self.weights.items()}
        arrays["metadata"] = np.array(json.dumps(self.metadata, sort_keys=True))
        write_npz(os.fspath(path), arrays)

    def forward(self, crops, geometry):
        """Features of crops already cut and resized, in float64.

        Args:
            crops: float array `(N, crop_size, crop_size, 3)`, as
                `crop_regions` makes them.
            geometry: float array `(N, 6)`, as `box_geometry` makes it.

        Returns:
            float64 array `(N, feature_dim)`.
        """
        x = np.asarray(crops, np.float64)
        for layer in CONV_LAYERS:
            # Keras computes pool(relu(conv + bias)); adding the bias and
            # the ReLU after the pooling gives the same numbers (both are
            # monotonic, the bias is one per channel) on a quarter of them.
            x = _max_pool2(_conv3x3(x, self.weights[f"{layer}/kernel"]))
            x = np.maximum(x + self.weights[f"{layer}/bias"], 0.0)
        x = np.concatenate(
            [x.reshape(len(x), -1), np.asarray(geometry, np.float64)], axis=-1
        )
        out = x @ self.weights[f"{FEATURE_LAYER}/kernel"]
        return np.maximum(out + self.weights[f"{FEATURE_LAYER}/bias"], 0.0)

    def __call__(self, images, boxes):
        """Features of the boxed regions of images.

        Args:
            images: uint8 array `(n_images, H, W, 3)`.
            boxes: integer array `(n_images, n_regions, 4)`: x0, y0, x1, y1.

        Returns:
            float32 array `(n_images, n_regions, feature_dim)`.
        """
        images, boxes = check_boxes(images, boxes)
        n_images, n_regions = boxes.shape[:2]
        geometry = box_geometry(boxes, images.shape[1:3]).reshape(-1, GEOMETRY_DIM)
        flat_boxes = boxes.reshape(-1, 1, 4)
        owner = np.repeat(np.arange(n_images), n_regions)
        features = np.empty((n_images * n_regions, self.feature_dim), np.float32)
        for start in range(0, len(owner), _CHUNK):
            rows = slice(start, start + _CHUNK)
            # One "image" per crop: each box is cut from its own image.
            crops = crop_regions(images[owner[rows]], flat_boxes[rows], self.crop_size)
            features[rows] = self.forward(crops[:, 0], geometry[rows])
        return features.reshape(n_images, n_regions, self.feature_dim)


@functools.lru_cache(maxsize=1)
def default_extractor():
    """The extractor with the weights shipped in the package, loaded once."""
    return RegionFeatureExtractor.load()


def build_keras_extractor(crop_size=16, channels=(16, 32, 64), feature_dim=128):
    """The extractor's network as a Keras model, for training and tests.

    Its layer names match the weight names of `RegionFeatureExtractor`:
    copy `model.get_layer(name).get_weights()` into `"{name}/kernel"` and
    `"{name}/bias"`, or the reverse with `set_weights`.

    Args:
        crop_size: side of the input crops.
        channels: output channels of the three convolutions.
        feature_dim: size of the feature layer.

    Returns:
        A `keras.Model` with inputs `{"crops": (N, crop_size, crop_size, 3),
        "geometry": (N, 6)}` and output the features `(N, feature_dim)`.
    """
    import keras  # only the pre-training script and tests build the model

    if len(channels) != len(CONV_LAYERS):
        raise ValueError(
            f"Expected {len(CONV_LAYERS)} convolution widths in `channels`. "
            f"Received: channels={channels!r}"
        )
    crops = keras.Input((crop_size, crop_size, 3), name="crops")
    geometry = keras.Input((GEOMETRY_DIM,), name="geometry")
    x = crops
    for name, width in zip(CONV_LAYERS, channels):
        x = keras.layers.Conv2D(
            width,
            3,
            padding="same",
            activation="relu",
            data_format="channels_last",
            name=name,
        )(x)
        x = keras.layers.MaxPooling2D(2, data_format="channels_last")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Concatenate()([x, geometry])
    features = keras.layers.Dense(feature_dim, activation="relu", name=FEATURE_LAYER)(x)
    inputs = {"crops": crops, "geometry": geometry}
    return keras.Model(inputs, features, name="region_extractor")
