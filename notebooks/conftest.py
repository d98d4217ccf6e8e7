"""nbval settings for the tutorials: what is compared and what is noise.

`pytest --nbval notebooks` (the README's test command runs it under the JAX
backend) executes each notebook top to bottom and compares every cell's text
output with the stored one. Outputs that matter are printed rounded or
asserted in the cells; what is noise is left out here.
"""

import os

# The notebooks read this to run their reduced size under test; the text of
# each notebook says what the full size gives and where its committed
# results come from. It is set here, before nbval starts the kernels, which
# inherit the environment.
os.environ.setdefault("SCAN_KERAS_QUICK", "1")
# Keras prints progress bars and TensorFlow/XLA log lines on stderr.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def pytest_collectstart(collector):
    if getattr(collector, "path", None) is None or collector.path.suffix != ".ipynb":
        return
    # stderr (warnings, progress bars, compilation logs) differs between
    # machines and versions; HTML and JavaScript reprs embed random ids.
    collector.skip_compare = tuple(collector.skip_compare) + (
        "stderr",
        "text/html",
        "application/javascript",
    )
