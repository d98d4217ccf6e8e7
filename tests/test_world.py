"""scan_keras.data.world and .extractor: the rendered world and its features."""

import collections
import hashlib
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from scan_keras.data import (
    WORLD_SPLIT_SIZES,
    Vocabulary,
    WorldSplit,
    load_grounding,
    load_split,
    load_world_images,
    load_world_objects,
    make_world,
    tokenize,
    write_world,
)
from scan_keras.data import extractor as extractor_lib
from scan_keras.data import world as world_lib
from scan_keras.data.world import (
    COLOUR_WORDS,
    COLOURS,
    CONTENT_WORDS,
    COUNT_WORDS,
    REGION_BACKGROUND,
    REGION_OBJECT,
    REGION_PARTIAL,
    SHAPE_WORDS,
    SHAPES,
    SIZE_WORDS,
    SIZES,
)

SIZES_SMALL = {"train": 30, "dev": 30, "test": 30}
# Word -> (attribute, value), and which shape words are plural.
ATTRIBUTE_OF = {
    **{w: ("colour", c) for c, words in COLOUR_WORDS.items() for w in words},
    **{w: ("size", s) for s, words in SIZE_WORDS.items() for w in words},
    **{
        w: ("shape", s)
        for s, pairs in SHAPE_WORDS.items()
        for pair in pairs
        for w in pair
    },
}
PLURAL = {plural for pairs in SHAPE_WORDS.values() for _, plural in pairs}
RELATION_OF = {
    "left": "left",
    "right": "right",
    "above": "above",
    "over": "above",
    "below": "below",
    "under": "below",
    "beneath": "below",
}
# A drawn object's fully covered pixels are its colour within the jitter.
COLOUR_TOLERANCE = world_lib._COLOUR_JITTER + 1


@pytest.fixture(scope="module")
def world():
    return make_world(SIZES_SMALL, seed=0)


def splits_equal(a, b):
    return (
        a.images.tobytes() == b.images.tobytes()
        and a.boxes.tobytes() == b.boxes.tobytes()
        and a.region_objects.tobytes() == b.region_objects.tobytes()
        and a.region_kinds.tobytes() == b.region_kinds.tobytes()
        and a.features.tobytes() == b.features.tobytes()
        and a.objects == b.objects
        and a.captions == b.captions
        and a.groundings == b.groundings
    )


def object_pixels(image, box, colour):
    """Mask of the pixels of `box` within the tolerance of a palette colour."""
    x0, y0, x1, y1 = box
    patch = image[y0:y1, x0:x1].astype(int)
    return np.abs(patch - np.array(COLOURS[colour])).max(-1) <= COLOUR_TOLERANCE


# --- layout and determinism -----------------------------------------------


def test_world_layout(world):
    assert list(world) == ["train", "dev", "test"]
    for split in world.values():
        n, r = split.n_images, split.n_regions
        assert (n, r, split.feature_dim) == (30, 10, 128)
        assert split.images.dtype == np.uint8 and split.images.shape == (n, 64, 64, 3)
        assert split.boxes.dtype == np.int32 and split.boxes.shape == (n, r, 4)
        assert split.region_objects.dtype == np.int32
        assert split.region_objects.shape == (n, r)
        assert split.features.dtype == np.float32
        assert split.features.shape == (n, r, 128)
        assert np.isfinite(split.features).all() and (split.features >= 0).all()
        assert len(split.captions) == len(split.groundings) == 5 * n
        assert all(2 <= len(objects) <= 4 for objects in split.objects)
        for objects in split.objects:
            for o in objects:
                assert set(o) == {"shape", "colour", "size", "box"}
                assert o["shape"] in SHAPES and o["colour"] in COLOURS
                assert o["size"] in SIZES
        assert "WorldSplit(n_images=30" in repr(split)
    # Images are drawn, not blank: objects stand out of a varied background.
    images = world["train"].images.astype(float)
    assert images.std(axis=(1, 2)).max(-1).min() > 10
    assert len({tuple(im[0, 0]) for im in world["train"].images}) == 30


def test_same_seed_same_bytes_and_other_seed_differs(world):
    again = make_world(SIZES_SMALL, seed=0)
    for split in world:
        assert splits_equal(world[split], again[split])
    other = make_world({"train": 30}, seed=1)["train"]
    assert not np.array_equal(other.images, world["train"].images)
    assert other.captions != world["train"].captions
    # A split's stream is its own: neither the other splits nor its size
    # change its first images.
    alone = make_world({"train": 10}, seed=0)["train"]
    assert alone.images.tobytes() == world["train"].images[:10].tobytes()
    assert alone.captions == world["train"].captions[:50]
    assert alone.features.tobytes() == world["train"].features[:10].tobytes()


def _digest(split):
    h = hashlib.sha256()
    for array in (split.images, split.boxes, split.region_objects, split.features):
        h.update(array.tobytes())
    h.update(json.dumps([split.captions, split.groundings, split.objects]).encode())
    return h.hexdigest()


@pytest.mark.slow
def test_same_bytes_under_another_backend():
    other = {"jax": "torch", "torch": "tensorflow"}.get(keras.backend.backend(), "jax")
    code = (
        "from scan_keras.data import make_world; import test_world; "
        "print(test_world._digest(make_world({'test': 8}, seed=5)['test']))"
    )
    path = os.pathsep.join([os.path.dirname(__file__)] + sys.path)
    env = dict(os.environ, KERAS_BACKEND=other, PYTHONPATH=path)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    command = [sys.executable, "-c", code]
    result = subprocess.run(
        command, env=env, check=True, capture_output=True, text=True
    )
    here = _digest(make_world({"test": 8}, seed=5)["test"])
    assert result.stdout.strip().splitlines()[-1] == here


def test_splits_are_disjoint(world):
    hashes = {s: [world_lib.scene_hash(o) for o in world[s].objects] for s in world}
    for split, keys in hashes.items():
        assert len(set(keys)) == len(keys), split
    assert not set(hashes["train"]) & set(hashes["dev"])
    assert not set(hashes["train"]) & set(hashes["test"])
    assert not set(hashes["dev"]) & set(hashes["test"])
    # The hash ignores the order of the objects, not their place.
    objects = world["train"].objects[0]
    assert world_lib.scene_hash(objects[::-1]) == hashes["train"][0]
    moved = [dict(objects[0], box=tuple(v + 1 for v in objects[0]["box"]))]
    assert world_lib.scene_hash(moved + objects[1:]) != hashes["train"][0]
    # A scene already seen is drawn again.
    seen = {hashes["train"][0]}
    redrawn = world_lib.render_split(1, np.random.default_rng([0, 0]), seen=seen)
    assert world_lib.scene_hash(redrawn.objects[0]) != hashes["train"][0]
    assert len(seen) == 2


# --- regions ---------------------------------------------------------------


def test_regions_box_objects_and_distractors(world):
    split = world["train"]
    positions = collections.Counter()
    kinds = collections.Counter()
    for i, objects in enumerate(split.objects):
        owners, region_kinds = split.region_objects[i], split.region_kinds[i]
        # Each object has exactly one region, its box jittered by a pixel.
        for k, obj in enumerate(objects):
            (where,) = np.flatnonzero(owners == k)
            positions[where] += 1
            assert region_kinds[where] == REGION_OBJECT
            assert np.abs(split.boxes[i, where] - np.array(obj["box"])).max() <= 1
        assert set(owners[owners >= 0].tolist()) == set(range(len(objects)))
        assert ((owners == -1) == (region_kinds != REGION_OBJECT)).all()
        kinds.update(region_kinds.tolist())
        image = split.images[i]
        for box, kind in zip(split.boxes[i], region_kinds):
            x0, y0, x1, y1 = box
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            if kind == REGION_OBJECT:
                continue
            # Distractors: no object's colour in background crops, and
            # less than half of an object's pixels in partial crops.
            held = []
            for obj in objects:
                bx0, by0, bx1, by1 = obj["box"]
                inter = (max(x0, bx0), max(y0, by0), min(x1, bx1), min(y1, by1))
                total = object_pixels(image, obj["box"], obj["colour"]).sum()
                if inter[0] < inter[2] and inter[1] < inter[3]:
                    inside = object_pixels(image, inter, obj["colour"]).sum()
                else:
                    inside = 0
                held.append(inside / total)
            if kind == REGION_BACKGROUND:
                assert max(held) == 0
            else:
                assert kind == REGION_PARTIAL
                assert 0 < max(held) < 0.5
    # Shuffled: objects sit at every place of the list, and every kind
    # of region is there.
    assert len(positions) == 10
    assert max(positions.values()) < 0.3 * sum(positions.values())
    assert len(kinds) == 3 and min(kinds.values()) > 60


def test_n_regions_option():
    split = make_world({"test": 3}, seed=2, n_regions=6, max_objects=3)["test"]
    assert split.boxes.shape == (3, 6, 4) and split.features.shape == (3, 6, 128)
    assert all(len(o) <= 3 for o in split.objects)


# --- captions and ground truth -------------------------------------------


def phrases(tokens, grounding):
    """The caption's phrases: {regions: [(word_index, word), ...]}."""
    found = collections.defaultdict(list)
    for word_index, regions in grounding:
        found[regions].append((word_index, tokens[word_index]))
    return found


def test_ground_truth_is_true_of_the_drawn_objects(world):
    checked = collections.Counter()
    for split in world.values():
        for c, (caption, grounding) in enumerate(zip(split.captions, split.groundings)):
            i = c // 5
            objects, image = split.objects[i], split.images[i]
            owners = split.region_objects[i]
            tokens = tokenize(caption)
            # Every colour, size and shape word is grounded, and only those.
            content = {j for j, t in enumerate(tokens) if t in CONTENT_WORDS}
            assert {j for j, _ in grounding} == content, caption
            assert len(grounding) == len(content)
            referents = {}
            for regions, words in phrases(tokens, grounding).items():
                assert regions == tuple(sorted(set(regions)))
                assert all(split.region_kinds[i, r] == REGION_OBJECT for r in regions)
                members = tuple(sorted(int(owners[r]) for r in regions))
                attributes = {}
                for _, word in words:
                    name, value = ATTRIBUTE_OF[word]
                    attributes[name] = value
                    for k in members:
                        assert objects[k][name] == value, (caption, word)
                        if name == "colour":
                            # The pixel at the box's centre has that colour.
                            x0, y0, x1, y1 = objects[k]["box"]
                            centre = image[(y0 + y1) // 2, (x0 + x1) // 2].astype(int)
                            distance = np.abs(centre - np.array(COLOURS[value])).max()
                            assert distance <= COLOUR_TOLERANCE, (caption, centre)
                shape_word = [w for _, w in words if ATTRIBUTE_OF[w][0] == "shape"]
                assert len(shape_word) == 1
                assert (shape_word[0] in PLURAL) == (len(members) > 1)
                # The words single out their object(s): exactly these match.
                matching = tuple(
                    k
                    for k, o in enumerate(objects)
                    if all(o[n] == v for n, v in attributes.items())
                )
                assert matching == members, caption
                if len(members) > 1:
                    # Counts are true: "two red squares", exactly two.
                    first = min(j for j, _ in words)
                    before = tokens[max(first - 3, 0) : first]
                    count = [w for w in before if w in COUNT_WORDS.values()]
                    assert count == [COUNT_WORDS[len(members)]], caption
                    checked["count"] += 1
                referents[min(j for j, _ in words)] = members
            n_mentioned = len({k for m in referents.values() for k in m})
            assert 1 <= n_mentioned <= 3
            # Relations are true of the boxes: "A left of B".
            relation = [RELATION_OF[t] for t in tokens if t in RELATION_OF]
            if relation:
                assert len(relation) == 1 and len(referents) == 2
                (a,), (b,) = (referents[j] for j in sorted(referents))
                ax0, ay0, ax1, ay1 = objects[a]["box"]
                bx0, by0, bx1, by1 = objects[b]["box"]
                holds = {
                    "left": ax1 <= bx0,
                    "right": bx1 <= ax0,
                    "above": ay1 <= by0,
                    "below": by1 <= ay0,
                }
                assert holds[relation[0]], caption
                checked["relation"] += 1
            checked["caption"] += 1
    assert checked["caption"] == 450
    assert checked["count"] > 10 and checked["relation"] > 50


def test_captions_vary(world):
    captions = [c for split in world.values() for c in split.captions]
    words = collections.Counter(t for c in captions for t in tokenize(c))
    # Synonyms, templates, relations and counts all occur.
    groups = (
        ("square", "box"),
        ("circle", "disc"),
        ("big", "large"),
        ("small", "little"),
        ("there", "is"),
        ("image", "picture"),
        ("left", "right", "above", "below"),
        ("two",),
        ("in",),
    )
    for group in groups:
        assert all(words[w] > 0 for w in group), group
    # Five different captions per image, and few repeats overall.
    for split in world.values():
        for i in range(split.n_images):
            assert len(set(split.captions[5 * i : 5 * i + 5])) == 5
    assert len(set(captions)) > 0.8 * len(captions)
    lengths = [len(tokenize(c)) for c in captions]
    assert min(lengths) >= 2 and 6 < np.mean(lengths) < 12


# --- the extractor ---------------------------------------------------------


def keras_extractor_from_npz(path):
    """The extractor's network, built here with Keras layers, given the .npz."""
    with np.load(path) as data:
        weights = {name: data[name] for name in data.files}
    metadata = json.loads(str(weights.pop("metadata")))
    size = metadata["crop_size"]
    crops = keras.Input((size, size, 3))
    geometry = keras.Input((extractor_lib.GEOMETRY_DIM,))
    x = crops
    layers = []
    for name in ("conv_1", "conv_2", "conv_3"):
        width = weights[f"{name}/kernel"].shape[-1]
        layer = keras.layers.Conv2D(width, 3, padding="same", activation="relu")
        layers.append((layer, name))
        x = keras.layers.MaxPooling2D(2)(layer(x))
    x = keras.layers.Concatenate()([keras.layers.Flatten()(x), geometry])
    dense = keras.layers.Dense(weights["feature/kernel"].shape[-1], activation="relu")
    layers.append((dense, "feature"))
    model = keras.Model([crops, geometry], dense(x))
    for layer, name in layers:
        layer.set_weights([weights[f"{name}/kernel"], weights[f"{name}/bias"]])
    return model, metadata


@pytest.mark.slow
def test_numpy_forward_equals_keras(world):
    model, metadata = keras_extractor_from_npz(extractor_lib.WEIGHTS_PATH)
    split = world["test"]
    size = metadata["crop_size"]
    crops = extractor_lib.crop_regions(split.images, split.boxes, size)
    crops = crops.reshape(-1, size, size, 3)
    geometry = extractor_lib.box_geometry(split.boxes, (64, 64)).reshape(-1, 6)
    expected = keras.ops.convert_to_numpy(
        model([crops.astype("float32"), geometry.astype("float32")])
    )
    extractor = extractor_lib.default_extractor()
    got = extractor.forward(crops, geometry)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # ... and so do the world's features, which went through __call__.
    got = split.features.reshape(-1, 128)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert expected.max() > 1 and (expected > 0).mean() > 0.2  # not all dead


@pytest.mark.slow
def test_crop_regions_is_bilinear_resize(world):
    split = world["dev"]
    crops = extractor_lib.crop_regions(split.images[:2], split.boxes[:2], 16)
    for i in range(2):
        for r in range(10):
            x0, y0, x1, y1 = split.boxes[i, r]
            pixels = split.images[i, y0:y1, x0:x1].astype("float32") / 255 - 0.5
            resized = keras.ops.image.resize(pixels, (16, 16), interpolation="bilinear")
            resized = keras.ops.convert_to_numpy(resized)
            np.testing.assert_allclose(crops[i, r], resized, atol=1e-5)
    tiny = np.zeros((1, 4, 4, 3), np.uint8)
    tiny[0, 1, 2] = 255
    one = extractor_lib.crop_regions(tiny, np.array([[[2, 1, 3, 2]]]), 3)
    np.testing.assert_array_equal(one, np.full((1, 1, 3, 3, 3), 0.5))


def test_shipped_weights_metadata():
    extractor = extractor_lib.default_extractor()
    meta = extractor.metadata
    assert os.path.getsize(extractor_lib.WEIGHTS_PATH) < 1024 * 1024
    assert meta["script"] == "scripts/pretrain_extractor.py"
    assert isinstance(meta["seed"], int)
    assert set(meta["aux_accuracy"]) == {"shape", "colour", "size", "kind"}
    assert min(meta["aux_accuracy"].values()) > 0.95
    assert (extractor.crop_size, extractor.feature_dim) == (16, 128)


def object_regions(split):
    features, labels = [], collections.defaultdict(list)
    for i, objects in enumerate(split.objects):
        for r, k in enumerate(split.region_objects[i]):
            if k >= 0:
                features.append(split.features[i, r])
                for name in ("shape", "colour", "size"):
                    labels[name].append(objects[k][name])
    return np.array(features, np.float64), {n: np.array(v) for n, v in labels.items()}


def test_features_carry_shape_colour_and_size():
    # A ridge-regression probe fitted on one seed's objects classifies
    # another seed's: the features hold what captions talk about.
    fit_x, fit_y = object_regions(make_world({"train": 40}, seed=10)["train"])
    test_x, test_y = object_regions(make_world({"train": 40}, seed=11)["train"])
    mean = fit_x.mean(0)
    design = np.c_[fit_x - mean, np.ones(len(fit_x))]
    for name, chance in (("shape", 1 / 6), ("colour", 1 / 8), ("size", 1 / 2)):
        classes = np.unique(fit_y[name])
        targets = (fit_y[name][:, None] == classes).astype(float)
        gram = design.T @ design + np.eye(design.shape[1])
        weights = np.linalg.solve(gram, design.T @ targets)
        scores = np.c_[test_x - mean, np.ones(len(test_x))] @ weights
        accuracy = np.mean(classes[scores.argmax(1)] == test_y[name])
        assert accuracy > 0.9 > chance, (name, accuracy)
    # Labels are never features: two objects that differ only in where
    # they are drawn get different features.
    assert len(np.unique(fit_x.round(3), axis=0)) == len(fit_x)


# --- files -------------------------------------------------------------------


def test_write_world_round_trip(tmp_path):
    sizes = {"train": 12, "test": 6}
    vocabulary = write_world(tmp_path, sizes, seed=3, min_count=1)
    world = make_world(sizes, seed=3)
    assert Vocabulary.load(tmp_path / "vocab.json").words == vocabulary.words
    for name, split in world.items():
        precomp = load_split(tmp_path, name)
        assert precomp.captions == split.captions
        features = precomp.image_features(np.arange(precomp.n_images))
        np.testing.assert_array_equal(features, split.features)
        assert load_grounding(tmp_path, name) == split.groundings
        images, boxes, region_objects = load_world_images(tmp_path, name)
        assert images.tobytes() == split.images.tobytes() and images.dtype == np.uint8
        assert boxes.tobytes() == split.boxes.tobytes() and boxes.dtype == np.int32
        np.testing.assert_array_equal(region_objects, split.region_objects)
        assert load_world_objects(tmp_path, name) == split.objects
    # Word indices point at the token ids after <start>.
    train = world["train"]
    for caption, grounding in zip(train.captions, train.groundings):
        ids, tokens = vocabulary.encode(caption), tokenize(caption)
        for word_index, _ in grounding:
            assert vocabulary.words[ids[word_index + 1]] == tokens[word_index]
    # The vocabulary comes from train (no dev): every train word, no test-only one.
    assert set(vocabulary.words[4:]) == {t for c in train.captions for t in tokenize(c)}
    # The same arguments write the same bytes.
    write_world(tmp_path / "again", sizes, seed=3, min_count=1)
    for name in sorted(os.listdir(tmp_path)):
        if os.path.isfile(tmp_path / name):
            again = (tmp_path / "again" / name).read_bytes()
            assert (tmp_path / name).read_bytes() == again, name


def test_default_sizes():
    assert set(WORLD_SPLIT_SIZES) == {"train", "dev", "test"}
    assert WORLD_SPLIT_SIZES["train"] >= 2000
    assert isinstance(make_world({"dev": 1})["dev"], WorldSplit)


@pytest.fixture
def written(tmp_path):
    write_world(tmp_path, {"test": 4}, seed=0)
    return tmp_path


def test_load_grounding_errors(written):
    path = written / "test_grounding.json"
    record = json.loads(path.read_text())
    with pytest.raises(FileNotFoundError, match="dev_grounding.json"):
        load_grounding(written, "dev")
    with pytest.raises(ValueError, match="Unknown split"):
        load_grounding(written, "val")
    record["groundings"].pop()
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="19 groundings.*20 captions"):
        load_grounding(written, "test")
    record["groundings"].append([[99, [0]]])
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="grounding 19 is malformed"):
        load_grounding(written, "test")
    record["groundings"][-1] = [[0, []]]
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="grounding 19"):
        load_grounding(written, "test")
    path.write_text('{"groundings": [')
    with pytest.raises(ValueError, match="not valid JSON"):
        load_grounding(written, "test")
    path.write_text('{"groundings": []}')
    with pytest.raises(ValueError, match="not a grounding file"):
        load_grounding(written, "test")
    os.remove(written / "test_caps.txt")
    path.write_text(json.dumps(record))
    with pytest.raises(FileNotFoundError, match="test_caps.txt"):
        load_grounding(written, "test")


def test_load_world_images_errors(written):
    path = written / "test_world.npz"
    with pytest.raises(FileNotFoundError, match="train_world.npz"):
        load_world_images(written, "train")
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="corrupt"):
        load_world_images(written, "test")
    images = np.zeros((4, 8, 8, 3), np.uint8)
    boxes = np.zeros((4, 10, 4), np.int32)
    region_objects = np.zeros((4, 10), np.int32)
    boxes[..., 2:] = 8
    wide = boxes.astype(np.int64)
    np.savez(path, images=images, boxes=wide, region_objects=region_objects)
    with pytest.raises(ValueError, match="boxes int32"):
        load_world_images(written, "test")
    boxes[0, 3] = (2, 2, 9, 4)
    np.savez(path, images=images, boxes=boxes, region_objects=region_objects)
    with pytest.raises(ValueError, match=r"boxes\[0, 3\]=\[2, 2, 9, 4\]"):
        load_world_images(written, "test")
    boxes[0, 3] = (2, 2, 8, 4)
    np.savez(
        path, images=images[:3], boxes=boxes[:3], region_objects=region_objects[:3]
    )
    with pytest.raises(ValueError, match="test_ims.npy"):
        load_world_images(written, "test")
    np.savez(path, images=images, boxes=boxes)
    with pytest.raises(ValueError, match="region_objects"):
        load_world_images(written, "test")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sizes": {"val": 3}}, "Unknown split.*'val'"),
        ({"sizes": {"train": 0}}, r"sizes\['train'\]=0"),
        ({"sizes": {"train": 2.5}}, r"sizes\['train'\]=2.5"),
        ({"sizes": []}, "sizes=\\[\\]"),
        ({"sizes": {"test": 2}, "n_regions": 4}, "n_regions=4"),
        ({"sizes": {"test": 2}, "max_objects": 5, "n_regions": 9}, "max_objects=5"),
        ({"sizes": {"test": 2}, "min_objects": 3, "max_objects": 2}, "max_objects=2"),
        ({"sizes": {"test": 2}, "min_objects": 0}, "min_objects=0"),
        ({"sizes": {"test": 2}, "seed": -1}, "seed=-1"),
    ],
)
def test_make_world_validates_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_world(**kwargs)


def test_write_world_and_extractor_validate(tmp_path):
    with pytest.raises(ValueError, match="min_count=0"):
        write_world(tmp_path, {"test": 1}, min_count=0)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        extractor_lib.RegionFeatureExtractor.load(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a file of extractor weights"):
        extractor_lib.RegionFeatureExtractor.load(tmp_path / "bad.npz")
    weights = dict(extractor_lib.default_extractor().weights)
    del weights["conv_2/bias"]
    with pytest.raises(ValueError, match="conv_2/bias"):
        extractor_lib.RegionFeatureExtractor(weights, {"crop_size": 16})
    extractor = extractor_lib.default_extractor()
    with pytest.raises(ValueError, match="crop_size"):
        extractor_lib.RegionFeatureExtractor(extractor.weights, {"crop_size": 4})
    with pytest.raises(ValueError, match="for crops of 24"):
        extractor_lib.RegionFeatureExtractor(extractor.weights, {"crop_size": 24})
    images = np.zeros((1, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"boxes\[0, 0\]=\[3, 3, 3, 5\]"):
        extractor(images, np.array([[[3, 3, 3, 5]]]))
    with pytest.raises(ValueError, match="one row of boxes per image"):
        extractor(images, np.zeros((2, 1, 4), np.int32))
