"""Execute the tutorial notebooks in place, under the conditions of their test.

    .venv/bin/python scripts/execute_notebooks.py               # all of them
    .venv/bin/python scripts/execute_notebooks.py notebooks/01_*.ipynb

The stored outputs are what `pytest --nbval notebooks` compares against, so
they are produced the way the test runs them: the JAX backend and the
reduced size (`SCAN_KERAS_QUICK=1`). Set `SCAN_KERAS_QUICK=0` to run the full
sizes interactively instead (do not commit those outputs).
"""

import argparse
import glob
import os
import sys
import time

import nbformat
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def clean(notebook):
    """Drops what nbval ignores anyway and what changes on every run.

    stderr carries log lines with timestamps and process ids (TensorFlow's,
    imported by Keras even under JAX); cell metadata may carry timings.
    """
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        cell.outputs = [
            o for o in cell.outputs
            if not (o.output_type == "stream" and o.name == "stderr")
        ]
        cell.metadata.pop("execution", None)
    return notebook


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))
    os.environ.setdefault("KERAS_BACKEND", "jax")
    os.environ.setdefault("SCAN_KERAS_QUICK", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        # Run from the notebook's folder, as Jupyter and nbval do.
        client = NotebookClient(
            notebook,
            timeout=args.timeout,
            kernel_name="python3",
            record_timing=False,
            resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}},
        )
        client.execute()
        nbformat.write(clean(notebook), path)
        print(f"{path}: {time.perf_counter() - start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
