"""The attention explorer: the page's numbers are the layer's (computed by
the page's own JavaScript, in headless Chromium), hovering and the slider
show them, the page works offline and on a phone, and bad input is named."""

import os
import re

import numpy as np
import pytest
import reference
from browser import browser, script_errors  # noqa: F401 (the fixture)
from helpers import model_for_folder
from keras import ops

from scan_keras.cli import main
from scan_keras.data import write_toy_precomp
from scan_keras.data.world import write_world
from scan_keras.explorer import (
    quantise,
    read_explorer_data,
    render_page,
    write_explorer,
)
from scan_keras.layers import StackedCrossAttention
from scan_keras.baselines import GlobalEmbedding
from scan_keras.models import SCAN

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS_PAGE = os.path.join(ROOT, "docs", "explorer", "explorer.html")
N_IMAGES = 4  # of the world's 6 test images
# Shown numbers have three decimals.
SHOWN = 5.01e-4


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("world"))
    write_world(path, {"test": 6}, min_count=1)
    return path


def _model(folder, img_dim=128, model_class=SCAN):
    return model_for_folder(folder, img_dim, model_class)


@pytest.fixture(scope="module")
def model(world):
    return _model(world)


@pytest.fixture(scope="module")
def page(world, model, tmp_path_factory):
    out = tmp_path_factory.mktemp("page") / "explorer.html"
    return write_explorer(model, world, "test", out, images=N_IMAGES)


@pytest.fixture
def opened(browser, page):  # noqa: F811 (the fixture imported above)
    browser.set_window_size(1280, 900)
    browser.get("file://" + os.path.abspath(page))
    assert script_errors(browser) == []
    return browser


def _vectors(driver, i, c):
    regions = driver.execute_script("return SCANExplorer.regions(arguments[0])", i)
    words = driver.execute_script("return SCANExplorer.words(arguments[0])", c)
    return np.asarray(regions), np.asarray(words)


def _options(layer, **overrides):
    options = dict(layer.options.as_dict(), **overrides)
    options.pop("product_dtype")
    return options


def _by_css(driver, selector):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def test_quantised_vectors_are_within_half_a_step():
    x = np.random.default_rng(0).normal(size=(5, 16)) * np.array([[1], [1e-3], [0], [30], [1]])
    q, scales = quantise(x)
    assert q.dtype == np.int16 and scales.dtype == np.float32
    assert np.all(np.abs(x - q * scales[:, None].astype(np.float64)) <= scales[:, None] / 2 * 1.0001)
    assert scales[2] == 1 and not q[2].any()  # an all-zero vector


def test_the_stored_vectors_are_the_models(opened, model, world):
    from scan_keras.data import load_split

    split = load_split(world, "test")
    regions, words = _vectors(opened, 1, 7)
    encoded = ops.convert_to_numpy(model.encode_images(split.image_features([1])))[0]
    # Unit vectors, 16-bit entries: at most half of 1 / 32767 off.
    np.testing.assert_allclose(regions, encoded, atol=1.6e-5)
    token_ids = model.vocabulary.encode_batch([split.captions[7]])
    vectors, _ = model.encode_captions(token_ids)
    np.testing.assert_allclose(words, ops.convert_to_numpy(vectors)[0], atol=1.6e-5)


@pytest.mark.parametrize("cross_attn", ["t2i", "i2t"])
def test_the_page_computes_the_layers_attention(opened, model, cross_attn):
    # Own pairs and a mismatch (caption 2 belongs to image 0); the model's
    # lambda_1, a flat and a sharp one (past 20 the layer shifts its exp).
    for i, c in ((0, 0), (3, 17), (2, 2)):
        regions, words = _vectors(opened, i, c)
        for lambda_softmax in (model.attention.lambda_softmax, 2.0, 30.0):
            for agg_func in ("mean", "logsumexp"):
                options = _options(
                    model.attention, cross_attn=cross_attn,
                    lambda_softmax=lambda_softmax, agg_func=agg_func,
                )
                got = opened.execute_script(
                    "return SCANExplorer.pair(arguments[0], arguments[1], arguments[2])",
                    i, c, {k: options[k] for k in ("cross_attn", "lambda_softmax", "agg_func")},
                )
                score, attention = StackedCrossAttention(**options)(
                    regions[None].astype("float32"), words[None].astype("float32"),
                    return_attention_scores=True,
                )
                np.testing.assert_allclose(
                    got["attention"], ops.convert_to_numpy(attention)[0, 0], atol=1e-5
                )
                assert got["score"] == pytest.approx(float(ops.convert_to_numpy(score)[0, 0]), abs=1e-5)
                # The float64 reference builds the attended vectors: the
                # page's Gram-matrix form agrees to rounding.
                want, alpha = reference.pair_score(
                    regions, words, cross_attn, lambda_softmax, agg_func,
                    options["lambda_lse"], options["raw_feature_norm"],
                )
                np.testing.assert_allclose(got["attention"], alpha, atol=1e-10)
                assert got["score"] == pytest.approx(want, abs=1e-10)
                assert got["scores"][agg_func] == got["score"]


def test_the_rank_is_the_models_on_the_stored_vectors(opened, model):
    caption = 7  # a caption of image 1
    regions = np.stack([_vectors(opened, i, caption)[0] for i in range(N_IMAGES)])
    words = _vectors(opened, 0, caption)[1]
    want = ops.convert_to_numpy(
        model.attention(regions.astype("float32"), words[None].astype("float32"))
    )[:, 0]
    got = opened.execute_script("return SCANExplorer.ranking(arguments[0])", caption)
    np.testing.assert_allclose(got["scores"], want, atol=1e-5)
    ranks = [1 + int(np.sum(want >= want[i])) - 1 for i in range(N_IMAGES)]
    assert got["ranks"] == ranks
    opened.execute_script("SCANExplorer.selectCaption(arguments[0])", caption)
    shown = opened.find_element("id", "rank-true").text
    assert shown.startswith(f"{ranks[1]} of {N_IMAGES} (image 1)")
    assert opened.find_element("id", "mismatch").is_displayed()  # image 0 is shown


def _expected_attention(driver, image, caption, lambda_softmax, cross_attn, model):
    regions, words = _vectors(driver, image, caption)
    options = _options(model.attention)
    _, alpha = reference.pair_score(
        regions, words, cross_attn, lambda_softmax, options["agg_func"],
        options["lambda_lse"], options["raw_feature_norm"],
    )
    return alpha


def _shown_region_weights(driver):
    return [float(n.text) for n in _by_css(driver, "#regions .chip .number")]


def test_hovering_a_word_lights_its_regions_and_the_slider_sharpens_them(opened, model):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    state = opened.execute_script("return SCANExplorer.state()")
    assert (state["image"], state["caption"], state["crossAttn"]) == (0, 0, "t2i")
    # The sharpest attention of a word not shown yet, so the hover changes
    # the page and lambda_1 visibly moves the weights.
    tokens = opened.execute_script("return SCANExplorer.data.captions[0].tokens")
    peaks = [max(w) for w in opened.execute_script("return SCANExplorer.pair(0, 0, {})")["attention"]]
    word = max(
        (w for w in range(1, len(tokens) - 1) if w != state["active"]), key=lambda w: peaks[w]
    )
    button = _by_css(opened, f"#words button[data-index='{word}']")[0]
    ActionChains(opened).move_to_element(button).perform()
    assert opened.execute_script("return SCANExplorer.state()")["active"] == word
    assert button.get_attribute("aria-pressed") == "true"

    def check(lambda_softmax):
        alpha = _expected_attention(opened, 0, 0, lambda_softmax, "t2i", model)[word]
        top = int(np.argmax(alpha))
        boxes = _by_css(opened, "#scene rect.box.top")
        assert [b.get_attribute("data-index") for b in boxes] == [str(top)]
        label = _by_css(opened, f"#scene text[data-index='{top}']")[0].text
        assert float(label) == pytest.approx(alpha[top], abs=SHOWN)
        np.testing.assert_allclose(_shown_region_weights(opened), alpha, atol=SHOWN)
        # Each region shows the undimmed picture as much as its weight.
        lit = _by_css(opened, "#scene image.lit")
        order = [int(image.get_attribute("data-index")) for image in lit]
        opacity = [float(image.get_attribute("opacity")) for image in lit]
        assert sorted(order) == list(range(len(alpha)))
        np.testing.assert_allclose(opacity, alpha[order], atol=1e-4)
        return alpha

    at_model = check(model.attention.lambda_softmax)
    slider = opened.find_element("id", "lambda-slider")
    slider.send_keys(Keys.ARROW_LEFT * 40)  # 9 -> 5, by steps of 0.1
    value = float(slider.get_attribute("value"))
    assert value == pytest.approx(5.0)
    assert float(opened.find_element("id", "lambda-number").get_attribute("value")) == value
    flatter = check(value)
    slider.send_keys(Keys.END)  # the slider's largest lambda_1
    assert float(slider.get_attribute("value")) == 30.0
    sharper = check(30.0)
    assert flatter.max() < at_model.max() < sharper.max()
    assert np.abs(sharper - flatter).max() > 1e-2  # visibly
    assert script_errors(opened) == []


def test_the_keyboard_walks_the_words(opened):
    from selenium.webdriver.common.keys import Keys

    first = _by_css(opened, "#words button[data-index='1']")[0]
    opened.execute_script("arguments[0].focus()", first)
    assert opened.execute_script("return SCANExplorer.state()")["active"] == 1
    first.send_keys(Keys.TAB)
    assert opened.execute_script("return SCANExplorer.state()")["active"] == 2
    assert "attends most to region" in opened.find_element("id", "status").text


def test_i2t_lights_the_words_of_a_region(opened, model):
    from selenium.webdriver.common.action_chains import ActionChains

    _by_css(opened, "input[name=direction][value=i2t]")[0].click()
    region = 4
    chip = _by_css(opened, f"#regions button[data-index='{region}']")[0]
    ActionChains(opened).move_to_element(chip).perform()
    alpha = _expected_attention(
        opened, 0, 0, model.attention.lambda_softmax, "i2t", model
    )[region]
    shown = [float(n.text) for n in _by_css(opened, "#words .chip .number")]
    np.testing.assert_allclose(shown, alpha, atol=SHOWN)
    top = _by_css(opened, "#words .chip.top")
    assert [t.get_attribute("data-index") for t in top] == [str(int(np.argmax(alpha)))]
    assert script_errors(opened) == []


def test_the_page_fits_a_phone(opened):
    opened.set_window_size(390, 844)
    width = opened.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth]"
    )
    assert width[0] <= width[1]
    opened.set_window_size(1280, 900)


def _check_offline(path):
    with open(path, encoding="utf-8") as f:
        html = f.read()
    # No fetched resource: no <link>, no src= in the markup, no URL but
    # the SVG namespace's name.
    assert "<link" not in html and not re.search(r"\ssrc=", html)
    assert not re.findall(r"https?://(?!www\.w3\.org/2000/svg)", html)
    return html


def test_the_page_is_one_offline_file(page):
    html = _check_offline(page)
    data = read_explorer_data(page)
    assert len(data["images"]) == N_IMAGES and len(data["captions"]) == 5 * N_IMAGES
    assert all(image["src"].startswith("data:image/png;base64,") for image in data["images"])
    assert render_page(data) == html


def test_the_docs_page_is_current_and_small(browser):  # noqa: F811
    if not os.path.exists(DOCS_PAGE):
        pytest.fail("docs/explorer/explorer.html is missing: scripts/make_explorer_page.py writes it")
    assert os.path.getsize(DOCS_PAGE) < 5e6
    html = _check_offline(DOCS_PAGE)
    data = read_explorer_data(DOCS_PAGE)
    assert len(data["images"]) == 100
    # Written with the package's current script and style sheet
    # (scripts/make_explorer_page.py --rerender refreshes them).
    assert render_page(data) == html
    browser.get("file://" + DOCS_PAGE)
    assert script_errors(browser) == []


def test_photos_are_drawn_under_their_boxes(tmp_path):
    from PIL import Image

    folder = str(tmp_path / "mine")
    write_toy_precomp(folder, n_images={"train": 4, "test": 3}, img_dim=12, seed=1)
    n_regions = np.load(os.path.join(folder, "test_ims.npy")).shape[1]
    boxes = np.array([[[10 * r, 5, 10 * r + 40, 60] for r in range(n_regions)]] * 3, np.float32)
    np.save(os.path.join(folder, "test_boxes.npy"), boxes)
    with open(os.path.join(folder, "test_image_ids.txt"), "w") as f:
        f.write("11\n12\n13\n")
    photos = tmp_path / "photos"
    photos.mkdir()
    for image_id in (11, 12):
        Image.new("RGB", (800, 600), (200, 90, 30)).save(photos / f"{image_id}.jpg")
    model = _model(folder, img_dim=12)
    out = tmp_path / "explorer.html"
    write_explorer(model, folder, "test", out, images=2, images_dir=str(photos))
    image = read_explorer_data(out)["images"][1]
    assert image["src"].startswith("data:image/jpeg;base64,")
    # The boxes keep the photo's pixels; the thumbnail is stretched over them.
    assert (image["width"], image["height"], image["id"]) == (800, 600, 12)
    assert image["boxes"][2] == [20.0, 5.0, 60.0, 60.0]
    with pytest.raises(ValueError, match=r"No photo of image 2 \(id 13\)"):
        write_explorer(model, folder, "test", out, images=3, images_dir=str(photos))
    # Without photos, outlines of the boxes.
    write_explorer(model, folder, "test", out, images=1)
    assert read_explorer_data(out)["images"][0]["src"] is None


def test_bad_input_is_named(world, model, tmp_path):
    out = tmp_path / "x.html"
    with pytest.raises(ValueError, match=r"features of size 12 \(img_dim\).*size 128"):
        write_explorer(_model(world, img_dim=12), world, "test", out)
    with pytest.raises(ValueError, match="at most 6 images.*images=7"):
        write_explorer(model, world, "test", out, images=7)
    with pytest.raises(ValueError, match="`images`"):
        write_explorer(model, world, "test", out, images=0)
    with pytest.raises(ValueError, match="Stacked Cross Attention"):
        write_explorer(_model(world, model_class=GlobalEmbedding), world, "test", out)
    # An empty split.
    empty = tmp_path / "empty"
    empty.mkdir()
    np.save(empty / "test_ims.npy", np.zeros((0, 10, 128), np.float32))
    (empty / "test_caps.txt").write_text("")
    with pytest.raises(ValueError, match="at least one image"):
        write_explorer(model, str(empty), "test", out)
    # Features without boxes (real data, before `import-features`).
    toy = str(tmp_path / "toy")
    write_toy_precomp(toy, n_images={"train": 4, "test": 3}, img_dim=12, seed=1)
    with pytest.raises(ValueError, match="no region boxes.*test_boxes.npy"):
        write_explorer(_model(toy, img_dim=12), toy, "test", out)
    assert not out.exists()


def test_the_command_writes_the_page(world, model, tmp_path, capsys):
    path = str(tmp_path / "model.keras")
    model.save(path)
    out = str(tmp_path / "page" / "explorer.html")
    assert main(["explore", path, world, "--out", out, "--images", "2"]) == 0
    assert "written to" in capsys.readouterr().out
    data = read_explorer_data(out)
    assert len(data["images"]) == 2 and data["options"]["cross_attn"] == "t2i"
    assert main(["explore", path, world, "--out", out, "--images", "9"]) == 2
    assert "at most 6 images" in capsys.readouterr().err
    assert len(read_explorer_data(out)["images"]) == 2  # the page written before
