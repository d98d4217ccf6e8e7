"""The documentation site builds with --strict and holds every page it should.

`mkdocs build --strict` fails on any warning: a broken internal link, a
docstring griffe cannot parse, a missing page. The site does not depend on
the Keras backend (mkdocstrings reads the source, it imports nothing), so
the test runs once, under the JAX backend of the per-backend test runs.
"""

import glob
import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The packages of the `docs` extra, by their import names.
DOCS_MODULES = (
    "mkdocs",
    "material",
    "mkdocstrings",
    "mkdocstrings_handlers.python",
    "mkdocs_jupyter",
)

# Each API page and objects it must document (their mkdocstrings anchors).
API_PAGES = {
    "layers": [
        "scan_keras.layers.StackedCrossAttention",
        "scan_keras.layers.RegionEncoder",
        "scan_keras.layers.CaptionEncoder",
        "scan_keras.layers.GlobalSimilarity",
        "scan_keras.layers.equations.pool",
        "scan_keras.layers.norms.normalize_raw_similarity",
    ],
    "losses": ["scan_keras.losses.ContrastiveLoss"],
    "ablations": ["scan_keras.ablations.run_ablations", "scan_keras.ablations.Variant"],
    "models": [
        "scan_keras.models.SCAN",
        "scan_keras.models.SCAN.similarity",
        "scan_keras.models.GlobalEmbedding",
    ],
    "training": [
        "scan_keras.training.train",
        "scan_keras.callbacks.RetrievalValidation",
        "scan_keras.callbacks.step_decay",
        "scan_keras.optimizers.TorchAdam",
    ],
    "evaluation": [
        "scan_keras.evaluation.retrieval_metrics",
        "scan_keras.evaluation.evaluate",
        "scan_keras.evaluation.grounding_accuracy",
    ],
    "data": [
        "scan_keras.data.vocabulary.Vocabulary",
        "scan_keras.data.tokenizers.tokenize",
        "scan_keras.data.precomp.load_split",
        "scan_keras.data.precomp.PrecompSplit",
        "scan_keras.data.batches.PairBatches",
        "scan_keras.data.toy.write_toy_precomp",
        "scan_keras.data.karpathy.import_captions",
        "scan_keras.data.features_tsv.import_features",
        "scan_keras.data.reference_vocab.load_reference_vocabulary",
        "scan_keras.data.world.make_world",
        "scan_keras.data.world.WorldSplit",
        "scan_keras.data.extractor.RegionFeatureExtractor",
    ],
    "presets": ["scan_keras.presets.Preset", "scan_keras.presets.get_preset"],
    "convert": ["scan_keras.convert.load_official_checkpoint"],
    "plots": [
        "scan_keras.plots.plot_word_attention",
        "scan_keras.plots.plot_training_curves",
    ],
    "demo": ["scan_keras.demo.run_demo"],
}

PAGES = ["concepts", "tutorials", "reproducing", "performance", "architecture", "api"]


def _missing_docs_modules():
    missing = []
    for name in DOCS_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


pytestmark = [
    pytest.mark.slow,  # the site build: left out of the fast suite
    pytest.mark.skipif(
        os.environ.get("KERAS_BACKEND") != "jax",
        reason="the docs do not depend on the Keras backend: built once, "
        "in the KERAS_BACKEND=jax run",
    ),
    pytest.mark.skipif(
        bool(_missing_docs_modules()),
        reason=f"the docs tools are not installed ({', '.join(_missing_docs_modules())}"
        " missing): pip install -e '.[docs]'",
    ),
]


def _read(site, page):
    with open(os.path.join(site, page, "index.html"), encoding="utf-8") as f:
        return f.read()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    site_dir = str(tmp_path_factory.mktemp("site"))
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--clean",
         "--config-file", os.path.join(ROOT, "mkdocs.yml"), "--site-dir", site_dir],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        "mkdocs build --strict failed:\n" + result.stdout[-3000:] + result.stderr[-6000:]
    )
    return site_dir


def _notebooks():
    return sorted(
        os.path.splitext(os.path.basename(path))[0]
        for path in glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb"))
    )


def test_pages_are_built(site):
    for page in PAGES:
        assert os.path.isfile(os.path.join(site, page, "index.html")), page
    assert os.path.isfile(os.path.join(site, "index.html"))


@pytest.mark.parametrize("page", sorted(API_PAGES))
def test_api_page_documents_its_objects(site, page):
    html = _read(site, os.path.join("api", page))
    for identifier in API_PAGES[page]:
        assert f'id="{identifier}"' in html, f"api/{page}: {identifier} is not documented"


def test_call_arguments_are_listed_as_parameters(site):
    # docs/hooks/griffe_call_arguments.py turns Keras' "Call arguments:"
    # section into a parameters list, one entry per argument.
    html = _read(site, os.path.join("api", "layers"))
    start = html.index('id="scan_keras.layers.StackedCrossAttention"')
    section = html[html.index("Call arguments:", start):]
    section = section[: section.index("Returns:")]
    for argument in ("images", "captions", "images_mask", "captions_mask"):
        assert f"<code>{argument}</code>" in section, argument


def test_each_notebook_has_a_page_linked_from_the_tutorials(site):
    tutorials = _read(site, "tutorials")
    for name in _notebooks():
        html = _read(site, os.path.join("notebooks", name))
        assert "jupyter-wrapper" in html, f"notebooks/{name}.ipynb was not rendered"
        assert f'href="../notebooks/{name}/"' in tutorials, (
            f"the tutorials page does not link to notebooks/{name}.ipynb"
        )


def test_maths_is_marked_for_katex(site):
    html = _read(site, "concepts")
    assert html.count('class="arithmatex"') > 20
    assert "javascripts/katex.js" in html
