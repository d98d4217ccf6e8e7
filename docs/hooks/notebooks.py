"""MkDocs hook: the tutorial notebooks of `notebooks/` as pages of the site.

The notebooks live in `notebooks/`, where `pytest --nbval` runs them, not in
`docs/`. For every `notebooks/NAME.ipynb` that exists, this hook

- adds the file `notebooks/NAME.ipynb`, read from the repository root, so
  that mkdocs-jupyter renders it as the page `notebooks/NAME/` from its
  stored outputs (nothing is executed),
- appends it to the "Tutorials" section of the nav, titled by the
  notebook's first heading,
- points a notebook's links to another notebook (`02_t2i_vs_i2t.ipynb`) at
  that notebook's page,
- leaves out of the rendered code cells a first line that is an nbval
  comment (`# NBVAL_IGNORE_OUTPUT` and the like): it speaks to the test
  runner, not to the reader,
- points the page's table of contents at the headings' real anchors (the
  table is made from the notebook's Markdown, where a heading's inline code
  does not count towards its anchor; nbconvert's anchors keep it),
- and has `mkdocs serve` watch the folder.

A Markdown link to a tutorial whose notebook does not exist yet, such as
`[text](../notebooks/05_ablations.ipynb)` on the tutorials page, is shown as its
plain text, so that `mkdocs build --strict` passes while the notebooks are
being written. Any other broken link still fails the strict build.
"""

import json
import logging
import os
import posixpath
import re

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

NAV_SECTION = "Tutorials"
FOLDER = "notebooks"  # in the repository and in the site

log = logging.getLogger("mkdocs.hooks.notebooks")

_HEADING = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.MULTILINE)
_NOTEBOOK_LINK = re.compile(r"\[([^\]\n]+)\]\(([^)\s#]+\.ipynb)(#[^)\s]*)?\)")
_SIBLING_LINK = re.compile(r'href="(?:\./)?([\w.-]+\.ipynb)(#[^"]*)?"')
# mkdocs-jupyter's MathJax block: an empty <script src=""> (which loads the
# page itself as a script) and its configuration. The site's KaTeX typesets
# the notebooks' maths instead (docs/javascripts/katex.js).
_MATHJAX = re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.DOTALL)
# A code cell's first line when it is an nbval comment: in the highlighted
# source, and in the hidden text that the copy button copies.
_NBVAL_HIGHLIGHTED = re.compile(r'(<pre><span></span>)<span class="c1">#\s*NBVAL_[A-Z_]+\s*</span>\n')
_NBVAL_COPIED = re.compile(r'(<div class="clipboard-copy-txt"[^>]*>)#\s*NBVAL_[A-Z_]+[ \t]*\n')
_HEADING = re.compile(r'<h([1-6])[^>]*\sid="([^"]+)"[^>]*>(.*?)</h\1>', re.DOTALL)
_ANCHOR_LINK = re.compile(r'<a class="anchor-link"[^>]*>.*?</a>', re.DOTALL)


def _root(config):
    return os.path.dirname(os.path.abspath(config.config_file_path))


def _notebook_dir(config):
    return os.path.join(_root(config), FOLDER)


def _notebooks(config):
    """The notebooks that exist, sorted by name: {file name: path}."""
    folder = _notebook_dir(config)
    if not os.path.isdir(folder):
        return {}
    names = sorted(n for n in os.listdir(folder) if n.endswith(".ipynb"))
    return {name: os.path.join(folder, name) for name in names}


def _title(path):
    """The notebook's first Markdown heading of level 1, else its file name."""
    try:
        with open(path, encoding="utf-8") as f:
            cells = json.load(f).get("cells", [])
    except (OSError, ValueError, AttributeError):
        cells = []
    for cell in cells:
        if cell.get("cell_type") != "markdown":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        match = _HEADING.search(source)
        if match:
            return match.group(1)
    stem = os.path.splitext(os.path.basename(path))[0]
    return stem.replace("_", " ")


def on_config(config):
    notebooks = _notebooks(config)
    for entry in config.nav or []:
        if isinstance(entry, dict) and NAV_SECTION in entry:
            section = entry[NAV_SECTION]
            for name, path in notebooks.items():
                section.append({_title(path): f"{FOLDER}/{name}"})
            break
    else:
        log.warning(f"No '{NAV_SECTION}' section in the nav for the notebooks.")
    return config


# Before mkdocs-jupyter's on_files, which turns .ipynb files into pages.
@event_priority(100)
def on_files(files, config):
    for name in _notebooks(config):
        files.append(
            File(
                f"{FOLDER}/{name}",
                src_dir=_root(config),
                dest_dir=config.site_dir,
                use_directory_urls=config.use_directory_urls,
            )
        )
    return files


def _is_notebook(page):
    return page.file.src_uri.endswith(".ipynb")


def on_page_markdown(markdown, page, config, files):
    if _is_notebook(page):  # mkdocs-jupyter renders these from the JSON
        return markdown
    existing = _notebooks(config)
    folder = posixpath.dirname(page.file.src_uri)

    def unlink_missing(match):
        target = posixpath.normpath(posixpath.join(folder, match.group(2)))
        name = posixpath.basename(target)
        if posixpath.dirname(target) == FOLDER and name not in existing:
            log.info(f"{page.file.src_uri}: notebooks/{name} is not there yet; "
                     "its link is shown as plain text.")
            return match.group(1)
        return match.group(0)

    return _NOTEBOOK_LINK.sub(unlink_missing, markdown)


def _strip_nbval_comments(html):
    return _NBVAL_COPIED.sub(r"\1", _NBVAL_HIGHLIGHTED.sub(r"\1", html))


def _repair_toc(page, html):
    """Points each entry of the page's table of contents at a heading that
    exists. The table's anchors are slugs of the headings' Markdown, in
    which inline code is left out ("3. Training with `model.fit`" gives
    `3-training-with`); nbconvert's anchors keep the code
    (`3-training-with-modelfit`). An entry whose anchor is missing takes the
    one heading anchor that starts with it, and that heading's text, code
    included."""
    headings = {
        anchor: _ANCHOR_LINK.sub("", text).strip() for _, anchor, text in _HEADING.findall(html)
    }

    def repair(entries):
        for entry in entries:
            if entry.id not in headings:
                candidates = [i for i in headings if i.startswith(entry.id + "-")]
                if len(candidates) == 1:
                    entry.id = candidates[0]
                    entry.title = headings[entry.id]
                else:
                    log.warning(f"{page.file.src_uri}: the table of contents links to "
                                f"#{entry.id}, which no heading has.")
            repair(entry.children)

    repair(page.toc)


def on_page_content(html, page, config, files):
    if not _is_notebook(page):
        return html

    def to_page(match):
        target = files.get_file_from_path(f"{FOLDER}/{match.group(1)}")
        if target is None:
            return match.group(0)
        return f'href="{target.url_relative_to(page.file)}{match.group(2) or ""}"'

    html = _strip_nbval_comments(_SIBLING_LINK.sub(to_page, _MATHJAX.sub("", html)))
    _repair_toc(page, html)
    return html


def on_serve(server, config, builder):
    folder = _notebook_dir(config)
    if os.path.isdir(folder):
        server.watch(folder)
    return server
