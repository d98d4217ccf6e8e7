"""The attention explorer: one HTML file to look inside a trained SCAN.

`write_explorer` writes a page in which a reader picks an image and a
caption (its own, or another image's to see a mismatch), hovers or focuses
a word to light up the regions it attends to, with their weights, moves
lambda_1 and watches the softmax sharpen or flatten, switches between t2i
and i2t, and reads each word's (or region's) relevance, the pooled scores
(AVG and LSE) and where the caption's image ranks among the subset.

The page recomputes the attention itself, so it stores what the equations
start from rather than their results:

- the encoded regions `v` `(I, R, d)` and words `e` (the real tokens of each
  caption, `<start>` and `<end>` included, as the model pools them) of the
  first `images` images of the split and their captions. The region-word
  similarities of every pair would be `I x C x R x W` numbers (5 million for
  the demo's 100 images); the vectors are `(I R + C W) d` (800,000);
- each vector as 16-bit integers with a float32 scale of its own (its
  largest magnitude / 32767): half the size of float32, and for unit
  vectors an error of at most 1.5e-5 per entry, where float16's reaches
  3e-5 near 0.1, a typical entry. The page's numbers thus differ from the model's by about 1e-4; they
  equal, to float64 rounding, the layer's on the stored vectors, which is
  what the tests assert;
- the pictures (the built-in world's pixels as PNG, or photos from
  `images_dir` as JPEG of at most `PHOTO_SIDE` pixels) and the region
  boxes in the image's pixels;
- the tokens and the attention's options (`cross_attn`, `lambda_softmax`,
  `agg_func`, `lambda_lse`, `raw_feature_norm`, `eps`).

One JavaScript implementation of the equations
(`explorer_assets/attention.js`, mirroring `layers/equations.py` for one
pair in float64) serves the page and its tests. The script, the style
sheet and the data are inlined in the one file: it opens from disk, with
no server and no network.
"""

import base64
import io
import json
import os
import re
from importlib import resources

import keras
import numpy as np

from scan_keras.atomic import atomic_path
from scan_keras.checks import check_positive_int
from scan_keras.layers import StackedCrossAttention
from scan_keras.search import Collection

# Images stored when `images` is not given (or the whole split if smaller).
DEFAULT_IMAGES = 100
# The longest side of a photo in the page, in pixels; boxes keep the
# photo's own coordinates, and the page stretches the thumbnail over them.
PHOTO_SIDE = 384
# Quantisation of the vectors: integers in [-QUANT_MAX, QUANT_MAX].
QUANT_MAX = 32767
FORMAT = "scan-keras explorer"
_ASSETS = ("explorer.html", "explorer.css", "attention.js", "explorer.js")
_SPECIAL_TOKENS = ("<start>", "<end>", "<pad>")
_DATA_ELEMENT = re.compile(
    r'<script id="explorer-data" type="application/json">(.*?)</script>', re.DOTALL
)


def write_explorer(
    model, data_dir, split="test", out="explorer.html", images=None,
    images_dir=None, batch_size=64,
):
    """Writes the attention explorer of `model` on a split, as one HTML file.

    Args:
        model: a trained `SCAN` whose similarity layer is
            `StackedCrossAttention`, with its vocabulary (a model loaded
            with `keras.saving.load_model`).
        data_dir: a folder in the precomputed layout, with region boxes:
            `{split}_boxes.npy` (written by `scan-keras import-features`) or
            the built-in world's `{split}_world.npz`.
        split: the split shown.
        out: the HTML file written.
        images: how many images of the split (the first ones) the page
            holds, with all their captions; `None` for the first
            `DEFAULT_IMAGES` (100), or the whole split if smaller. Each
            takes `2 d (R + 5 W)` bytes for R regions, captions of W tokens
            and a joint space of d, and a third more as base64 text: 21 KB
            for the demo (d = 128, R = 10, W = 10), about 290 KB for the
            paper's models (d = 1024, R = 36, W = 14), and its picture.
        images_dir: a folder with the split's photos, found as
            `Collection.image` finds them (`{split}_filenames.txt`, or the
            image ids); without it the built-in world's pictures are used,
            and other data are drawn as outlines of their boxes.
        batch_size: images (and captions) encoded at a time.

    Returns:
        The path of the file written.

    Raises:
        ValueError: the model has no `StackedCrossAttention` or no
            vocabulary; its region features and the split's differ in
            size; the split is empty or smaller than `images`; the split
            has no boxes; a photo is missing from `images_dir`.

    Example:

    ```python
    import keras
    import scan_keras
    from scan_keras.explorer import write_explorer

    model = keras.saving.load_model("scan_keras_demo/scan/model_best.keras")
    write_explorer(model, "scan_keras_demo/world", "test", "explorer.html")
    # Open explorer.html in a browser: no server needed.
    ```
    """
    check_positive_int("images", images, allow_none=True)
    check_positive_int("batch_size", batch_size)
    attention = _check_model(model)
    collection = Collection(model, data_dir, split, batch_size=batch_size)
    test = collection.split
    if test.img_dim != model.img_dim:
        raise ValueError(
            f"Model {model.name!r} takes region features of size {model.img_dim} "
            f"(img_dim), but the {split} split of {collection.data_dir} has "
            f"features of size {test.img_dim} ({test.path}): the model was "
            "trained on other features."
        )
    if images is None:
        images = min(DEFAULT_IMAGES, test.n_images)
    if images > test.n_images:
        raise ValueError(
            f"Expected at most {test.n_images} images, the size of the {split} "
            f"split of {collection.data_dir}. Received: images={images}"
        )
    if collection.boxes(0) is None:
        raise ValueError(
            f"The {split} split of {collection.data_dir} has no region boxes "
            f"({split}_boxes.npy, which `scan-keras import-features` writes): "
            "the explorer draws each region's weight on its box."
        )
    data = _page_data(model, attention, collection, images, images_dir, batch_size)
    out = os.fspath(out)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    # Whole or not at all: an earlier page survives a failed write.
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(render_page(data))
    return out


def _check_model(model):
    layer = getattr(model, "attention", None)
    if not isinstance(layer, StackedCrossAttention):
        raise ValueError(
            f"The explorer shows Stacked Cross Attention; model "
            f"{getattr(model, 'name', model)!r} scores with "
            f"{type(layer).__name__}: pass a SCAN model."
        )
    return layer


def _page_data(model, attention, collection, n_images, images_dir, batch_size):
    """Everything the page reads, as JSON-ready values."""
    test = collection.split
    per_image = test.captions_per_image
    captions = test.captions[: n_images * per_image]
    regions = _encode_regions(model, test, n_images, batch_size)
    words, token_ids = _encode_words(model, captions, batch_size)
    vocabulary = model.vocabulary
    words_of_id = vocabulary.words
    caption_records = []
    for c, (caption, ids) in enumerate(zip(captions, token_ids)):
        tokens = ["<start>"] + vocabulary.tokenize(caption) + ["<end>"]
        caption_records.append({
            "image": c // per_image,
            "text": caption,
            "tokens": tokens,
            # Words outside the vocabulary reach the model as <unk>.
            "unknown": [k for k, i in enumerate(ids) if words_of_id[i] == "<unk>"],
        })
    options = attention.options.as_dict()
    options.pop("product_dtype")
    return {
        "format": FORMAT,
        "version": 1,
        "model": {
            "name": model.name,
            "preset": getattr(model, "preset", None),
            "embed_size": int(regions.shape[-1]),
            "product_dtype": attention.product_dtype,
        },
        "options": options,
        "split": test.split,
        "data": os.path.basename(os.path.normpath(collection.data_dir)),
        "split_images": test.n_images,
        "captions_per_image": per_image,
        "n_regions": test.n_regions,
        "dim": int(regions.shape[-1]),
        "images": [
            _image_record(collection, i, images_dir) for i in range(n_images)
        ],
        "captions": caption_records,
        "regions": _pack(regions.reshape(-1, regions.shape[-1])),
        "words": _pack(np.concatenate(words, axis=0)),
        "special_tokens": list(_SPECIAL_TOKENS),
    }


def _encode_regions(model, test, n_images, batch_size):
    """The region vectors v of the first `n_images` images, `(I, R, d)`."""
    out = []
    for start in range(0, n_images, batch_size):
        indices = np.arange(start, min(start + batch_size, n_images))
        regions = model.encode_images(test.image_features(indices))
        out.append(np.asarray(keras.ops.convert_to_numpy(regions), np.float32))
    return np.concatenate(out, axis=0)


def _encode_words(model, captions, batch_size):
    """Each caption's word vectors `(W_c, d)` (its real tokens only), and
    its token ids."""
    vectors, ids = [], []
    for start in range(0, len(captions), batch_size):
        token_ids = model.vocabulary.encode_batch(captions[start : start + batch_size])
        words, _ = model.encode_captions(token_ids)
        words = np.asarray(keras.ops.convert_to_numpy(words), np.float32)
        for row, vectors_of_row in zip(token_ids, words):
            length = int(np.sum(row != 0))
            vectors.append(vectors_of_row[:length])
            ids.append([int(i) for i in row[:length]])
    return vectors, ids


def quantise(vectors):
    """16-bit integers and a float32 scale per vector: `x ~ q * scale`.

    Args:
        vectors: float array `(n, d)`.

    Returns:
        `(q, scales)`: int16 `(n, d)` and float32 `(n,)`, with
        `|x - q * scale| <= scale / 2` and `scale = max |x| / 32767` (1 for
        an all-zero vector).
    """
    vectors = np.asarray(vectors, np.float64)
    top = np.max(np.abs(vectors), axis=-1)
    scales = np.where(top > 0, top / QUANT_MAX, 1.0).astype(np.float32)
    q = np.rint(vectors / scales.astype(np.float64)[:, None])
    return np.clip(q, -QUANT_MAX, QUANT_MAX).astype(np.int16), scales


def _pack(vectors):
    q, scales = quantise(vectors)
    return {
        "count": int(q.shape[0]),
        # Little-endian whatever the machine: the page reads them so.
        "values": _base64(q.astype("<i2").tobytes()),
        "scales": _base64(scales.astype("<f4").tobytes()),
    }


def _base64(raw):
    return base64.b64encode(raw).decode("ascii")


def _image_record(collection, index, images_dir):
    boxes = collection.boxes(index)
    picture = collection.image(index, images_dir)
    ids = collection.image_ids
    image_id = None if ids is None else ids[index]
    if picture is None and images_dir is not None:
        raise ValueError(
            f"No photo of image {index}"
            + ("" if image_id is None else f" (id {image_id})")
            + f" of the {collection.split.split} split in {images_dir}."
        )
    record = {
        "index": index,
        "id": image_id,
        "boxes": [[round(float(v), 1) for v in box] for box in boxes],
    }
    if picture is None:
        # An outline of the boxes on a blank canvas, as `plots` draws it.
        record.update(src=None, width=float(boxes[:, 2].max()) + 1,
                      height=float(boxes[:, 3].max()) + 1)
        return record
    rgb = _as_uint8(picture)
    record.update(
        src=_data_uri(rgb, photo=images_dir is not None),
        width=int(rgb.shape[1]), height=int(rgb.shape[0]),
    )
    return record


def _as_uint8(picture):
    picture = np.asarray(picture)
    if picture.ndim == 2:
        picture = np.repeat(picture[..., None], 3, axis=-1)
    picture = picture[..., :3]
    if picture.dtype != np.uint8:
        # Floats in [0, 1], as matplotlib reads PNG files.
        picture = np.clip(np.asarray(picture, np.float64) * 255 + 0.5, 0, 255)
    return picture.astype(np.uint8)


def _data_uri(rgb, photo):
    """The picture as a data URI: lossless PNG for the world's small
    drawings, a JPEG thumbnail for photos (a 500 x 375 PNG is ~300 KB)."""
    from PIL import Image  # a dependency of matplotlib, hence of the package

    image = Image.fromarray(rgb, "RGB")
    buffer = io.BytesIO()
    if photo:
        image.thumbnail((PHOTO_SIDE, PHOTO_SIDE))
        image.save(buffer, format="JPEG", quality=82)
        kind = "jpeg"
    else:
        image.save(buffer, format="PNG", optimize=True)
        kind = "png"
    return f"data:image/{kind};base64," + _base64(buffer.getvalue())


def render_page(data):
    """The HTML page of `data` (what `write_explorer` stores), with the
    script and style sheet of `explorer_assets/` inlined.

    Args:
        data: a JSON-ready dict in the explorer's format.

    Returns:
        The page as a string.
    """
    assets = {name: _asset(name) for name in _ASSETS}
    for name in ("attention.js", "explorer.js"):
        # The script would end its own <script> element early.
        if "</script" in assets[name].lower():
            raise ValueError(f"explorer_assets/{name} contains '</script'.")
    # "<" escaped inside JSON strings: no caption can close the element.
    payload = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
    parts = {
        "STYLE": assets["explorer.css"],
        "SCRIPT": assets["attention.js"] + "\n" + assets["explorer.js"],
        "DATA": payload,
    }
    # One pass: nothing inserted is searched for markers again.
    return re.sub(
        r"/\*(STYLE|SCRIPT|DATA)\*/", lambda m: parts[m.group(1)],
        assets["explorer.html"],
    )


def read_explorer_data(path):
    """The data stored in a page that `write_explorer` wrote.

    `render_page(read_explorer_data(path))` writes the page again with the
    package's current script and style sheet, without the model.

    Args:
        path: the HTML file.

    Returns:
        The dict `render_page` takes.
    """
    with open(os.fspath(path), encoding="utf-8") as f:
        text = f.read()
    match = _DATA_ELEMENT.search(text)
    if match is None:
        raise ValueError(f"{path} is not an explorer page: it holds no explorer data.")
    data = json.loads(match.group(1))
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not an explorer page: its data are not {FORMAT!r}.")
    return data


def _asset(name):
    return (
        resources.files("scan_keras").joinpath("explorer_assets").joinpath(name)
        .read_text(encoding="utf-8")
    )
