"""The documentation site builds with --strict and holds every page it should.

`mkdocs build --strict` fails on any warning: a broken internal link, a
docstring griffe cannot parse, a missing page. The site does not depend on
the Keras backend (mkdocstrings reads the source, it imports nothing), so
the test runs once, under the JAX backend of the per-backend test runs.
"""

import ast
import glob
import html as html_lib
import importlib.util
import json
import os
import re
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
        "scan_keras.layers.SumMaxSimilarity",
        "scan_keras.layers.equations.pool",
        "scan_keras.layers.norms.normalize_raw_similarity",
    ],
    "losses": ["scan_keras.losses.ContrastiveLoss"],
    "ablations": ["scan_keras.ablations.run_ablations", "scan_keras.ablations.Variant"],
    "models": [
        "scan_keras.models.SCAN",
        "scan_keras.models.SCAN.similarity",
        "scan_keras.baselines.GlobalEmbedding",
        "scan_keras.baselines.SumMax",
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
    "index_search": [
        "scan_keras.retrieval.TwoStageSearch",
        "scan_keras.retrieval.ranking.two_stage_metrics",
    ],
    "explorer": ["scan_keras.explorer.write_explorer"],
}

PAGES = [
    "concepts", "tutorials", "reproducing", "performance", "architecture", "api", "explorer",
    "cli", "faq", "cite",
]


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
    pytest.mark.once,  # the docs do not depend on the Keras backend
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


def test_pages_fetch_nothing_from_elsewhere(site):
    """Scripts, styles and fonts are served with the site: it works offline."""
    external = re.compile(
        r'<(?:script[^>]*\ssrc|link[^>]*\shref)="(?:https?:)?//[^"]+"[^>]*>', re.IGNORECASE
    )
    for path in glob.glob(os.path.join(site, "**", "*.html"), recursive=True):
        with open(path, encoding="utf-8") as f:
            html = f.read()
        tags = [t for t in external.findall(html) if "<link" not in t or "stylesheet" in t
                or "preconnect" in t or 'rel="icon"' in t]
        assert not tags, f"{os.path.relpath(path, site)} loads {tags[0]}"
        assert 'src=""' not in html, f"{os.path.relpath(path, site)} has an empty script source"
        # The theme's repository widget would ask GitHub's API for stars and
        # forks; the site's own partial links to the repository without it.
        assert 'data-md-component="source"' not in html, os.path.relpath(path, site)


def _package_version():
    with open(os.path.join(ROOT, "scan_keras", "__init__.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "__version__":
            return ast.literal_eval(node.value)
    raise AssertionError("scan_keras/__init__.py sets no __version__")


def test_the_site_shows_the_repository_and_the_packages_version(site):
    version = _package_version()
    home = _read(site, "")
    assert 'href="https://github.com/scan-keras/scan-keras"' in home
    assert f'md-source__fact--version">{version}</li>' in home
    assert f"This site documents scan-keras {version}." in home
    cite = _read(site, "cite")
    assert f"version = {{{version}}}" in re.sub(r"<[^>]+>", "", cite)
    assert "1803.08024" in cite and "201--216" in cite
    for path in glob.glob(os.path.join(site, "**", "*.html"), recursive=True):
        with open(path, encoding="utf-8") as f:
            assert "{{ version }}" not in f.read(), os.path.relpath(path, site)


def _pages(site):
    for path in sorted(glob.glob(os.path.join(site, "**", "index.html"), recursive=True)):
        with open(path, encoding="utf-8") as f:
            yield os.path.relpath(path, site), f.read()


def test_every_table_of_contents_link_has_its_heading(site):
    """The table of contents beside each page links to anchors that exist
    (on notebook pages, headings with inline code once lost theirs)."""
    for name, html in _pages(site):
        ids = set(re.findall(r'\sid="([^"]+)"', html))
        toc = re.search(r'<nav class="md-nav md-nav--secondary".*?</nav>', html, re.DOTALL)
        for anchor in re.findall(r'href="#([^"]+)"', toc.group(0) if toc else ""):
            assert html_lib.unescape(anchor) in ids, f"{name}: the contents link to #{anchor}"


def test_notebook_pages_show_no_nbval_comments(site):
    for name in _notebooks():
        html = _read(site, os.path.join("notebooks", name))
        assert "NBVAL_" not in html, f"notebooks/{name}: an nbval comment is shown"


def test_no_bold_made_of_exponents(site):
    # "2**25 ... 2**20" in Markdown is bold text, not powers of two.
    for name, html in _pages(site):
        text = re.sub(r"<(pre|code)\b.*?</\1>", "", html, flags=re.DOTALL)
        assert not re.search(r"\b\d+<strong>\d", text), f"{name}: an exponent became bold"


def _source(name):
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return f.read()


def test_the_performance_page_quotes_the_stored_import_benchmark():
    # Its figures, as README.md quotes them (tests/test_features_tsv.py).
    stored = json.loads(_source("benchmarks/results/import_features.json"))
    page = " ".join(_source("docs/performance.md").split())
    stated = re.search(
        r"\*\*(\d+) MB/s\*\*: MS-COCO's ([\d.]+) GB in about (\d+) minutes \| (\d+) MB peak", page
    )
    assert stated, "docs/performance.md states the importer's benchmark"
    assert int(stated[1]) == stored["mb_per_s"]
    assert float(stated[2]) == stored["coco_gb"]
    assert int(stated[3]) == stored["coco_minutes"]
    assert int(stated[4]) == stored["peak_rss_mb"]


# The paper's sections, cited on every page by number and title.
PAPER_SECTIONS = {
    "3.1": "Image-Text Stacked Cross Attention",
    "3.2": "Text-Image Stacked Cross Attention",
    "3.3": "Alignment Objective",
    "3.4": "Representing images with Bottom-Up Attention",
    "3.5": "Representing Sentences",
    "4": "Experiments",
}


def test_the_paper_is_cited_by_section_and_title():
    pages = glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True)
    for path in pages:
        with open(path, encoding="utf-8") as f:
            text = " ".join(f.read().split())
        name = os.path.relpath(path, ROOT)
        for match in re.finditer(r"\bsections? (\d(?:\.\d)?)\b(?!-)(,? \"([^\"]+)\")?", text):
            number, title = match.group(1), match.group(3)
            if number == "3" and title is None:  # "section 3 of the paper": the whole method
                continue
            assert number in PAPER_SECTIONS, f"{name}: the paper has no section {number}"
            assert title == PAPER_SECTIONS[number], (
                f"{name}: section {number} is cited as {title!r}, not as "
                f'section {number}, "{PAPER_SECTIONS[number]}"'
            )


@pytest.mark.parametrize(
    "name", ["docs/performance.md", "docs/architecture.md", "benchmarks/gpu.sh"]
)
def test_user_pages_speak_of_the_project_not_of_its_making(name):
    text = _source(name)
    for pattern in (r"\blent\b", r"\bborrow", r"(?-i:\$OUT)\b", r"\bsessions?\b", r"\.whl\b",
                    r"\bat hand\b"):
        assert not re.search(pattern, text, re.IGNORECASE), f"{name}: {pattern}"


# Text of a page that is not code, with $...$, $$...$$ or \( \) maths that
# KaTeX did not typeset.
_RAW_MATHS_JS = r"""
const skip = "PRE, CODE, SCRIPT, STYLE, TEXTAREA, .katex, .clipboard-copy-txt";
const found = [];
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
while (walker.nextNode()) {
  const node = walker.currentNode;
  if (node.parentElement.closest(skip)) continue;
  const text = node.textContent;
  if (/\$[^$\s][^$\n]*\$|\\\(|\\\[/.test(text)) found.push(text.trim().slice(0, 80));
}
return found;
"""


@pytest.fixture(scope="module")
def served_site(site):
    """The built site over HTTP on a free local port, as a user's browser
    sees it (the search index is fetched by a web worker, which a file://
    page may not start)."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=site)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def _load(driver, url, what):
    import time

    driver.get(url)
    deadline = time.time() + 20
    while driver.execute_script("return document.readyState") != "complete":
        assert time.time() < deadline, f"{what} did not finish loading"
        time.sleep(0.1)
    time.sleep(0.5)  # the theme's document$ subscribers typeset the maths


def _screenshot(driver, name):
    """With SCAN_KERAS_SCREENSHOTS=DIR, the window as DIR/NAME.png."""
    shots = os.environ.get("SCAN_KERAS_SCREENSHOTS")
    if shots:
        os.makedirs(shots, exist_ok=True)
        driver.save_screenshot(os.path.join(shots, f"{name}.png"))


@pytest.mark.parametrize(
    "page, least_formulas",
    [
        ("", 0), ("concepts/", 50), ("notebooks/01_cross_attention/", 100), ("api/layers/", 0),
        ("reproducing/", 15), ("performance/", 2), ("cli/", 1), ("faq/", 0), ("cite/", 0),
    ],
)
def test_maths_renders_offline_in_a_browser(served_site, page, least_formulas):
    """In headless Chromium: every formula is typeset, no script fails and
    nothing is fetched from the network (the test machine has none)."""
    from browser import open_browser, script_errors

    driver = open_browser()
    try:
        _load(driver, served_site + page, page or "home")
        raw = driver.execute_script(_RAW_MATHS_JS)
        formulas = driver.execute_script("return document.querySelectorAll('.katex').length")
        errors = script_errors(driver)
        _screenshot(driver, page.strip("/").replace("/", "_") or "home")
    finally:
        driver.quit()
    assert not errors, f"{page or 'home'}: {errors}"
    assert not raw, f"{page or 'home'} shows maths KaTeX did not typeset: {raw[:3]}"
    assert formulas >= least_formulas, f"{page or 'home'}: {formulas} formulas typeset"


# Tables and preformatted blocks (code, ASCII diagrams) of the article that
# are wider than the column, and whether each one can be scrolled sideways:
# the first box around it that does not let it overflow must scroll, or its
# end is out of sight with no way to reach it.
_WIDE_JS = r"""
const article = document.querySelector("article");
const right = article.getBoundingClientRect().right;
const report = {wide: [], clipped: []};
for (const element of article.querySelectorAll("table, pre, pre > code")) {
  const wrap = element.tagName === "TABLE" ? element.closest(".md-typeset__scrollwrap") : null;
  const wide = wrap ? wrap.scrollWidth > wrap.clientWidth + 1
    : element.scrollWidth > element.clientWidth + 1
      || element.getBoundingClientRect().right > right + 1;
  if (!wide) continue;
  const what = element.tagName + ": " + element.innerText.slice(0, 50).replace(/\s+/g, " ");
  report.wide.push(what);
  let box = wrap || element, scrolls = false;
  while (box && box !== article) {
    const overflow = getComputedStyle(box).overflowX;
    if (overflow === "auto" || overflow === "scroll") { scrolls = true; break; }
    if (overflow !== "visible" && box.scrollWidth > box.clientWidth + 1) break;
    box = box.parentElement;
  }
  if (!scrolls) report.clipped.push(what);
}
return report;
"""


@pytest.mark.parametrize(
    "page", ["reproducing/", "performance/", "architecture/", "cli/", "notebooks/03_encoders_and_loss/"]
)
def test_wide_tables_fit_and_wide_blocks_scroll(served_site, page):
    """At a desktop width the paper's tables fit the column, last columns
    (R@10, rsum) included; whatever is still wider scrolls inside it."""
    from browser import open_browser

    driver = open_browser()
    try:
        _load(driver, served_site + page, page)
        report = driver.execute_script(_WIDE_JS)
        if page == "reproducing/":
            # The Flickr30K table, in view, for the screenshot.
            driver.execute_script(
                "document.getElementById('the-papers-numbers-and-ours').scrollIntoView()")
            _screenshot(driver, "reproducing_wide_table")
    finally:
        driver.quit()
    assert not report["clipped"], f"{page}: cut off, without a scrollbar: {report['clipped']}"
    if page in ("reproducing/", "cli/"):
        tables = [w for w in report["wide"] if w.startswith("TABLE")]
        assert not tables, f"{page}: tables wider than the column: {tables}"

