"""MkDocs hook: the package's version on the site, read from the package.

The version is `__version__` in `scan_keras/__init__.py` (and the version
in `pyproject.toml`, which packaging reads). This hook reads it without
importing the package (the site builds without a Keras backend), and

- sets `extra.package_version`, which the header shows beside the
  repository link (`docs/templates/theme/partials/source.html`); not
  `extra.version`, which the theme reserves for its version selector,
- replaces `{{ version }}` in the Markdown of the pages (the citation's
  BibTeX, for one),
- and warns, which fails `mkdocs build --strict`, when `pyproject.toml`
  states another version.
"""

import ast
import logging
import os
import re

log = logging.getLogger("mkdocs.hooks.project")

PLACEHOLDER = "{{ version }}"


def _root(config):
    return os.path.dirname(os.path.abspath(config.config_file_path))


def package_version(root):
    """`__version__` of `scan_keras/__init__.py`, read as source."""
    path = os.path.join(root, "scan_keras", "__init__.py")
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__version__" for target in node.targets
        ):
            return ast.literal_eval(node.value)
    raise ValueError(f"{path} sets no __version__")


def _pyproject_version(root):
    path = os.path.join(root, "pyproject.toml")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None
    # The [project] table's `version = "..."`; no TOML parser needed.
    project = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.MULTILINE | re.DOTALL)
    match = project and re.search(r'^version\s*=\s*"([^"]+)"', project.group(1), re.MULTILINE)
    return match.group(1) if match else None


def on_config(config):
    root = _root(config)
    version = package_version(root)
    stated = _pyproject_version(root)
    if stated is not None and stated != version:
        log.warning(f"scan_keras.__version__ is {version} but pyproject.toml states {stated}.")
    config.extra["package_version"] = version
    return config


def on_page_markdown(markdown, page, config, files):
    return markdown.replace(PLACEHOLDER, config.extra["package_version"])
