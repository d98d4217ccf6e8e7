"""Figures: where each word attends, and how training went.

Both functions return a `matplotlib.figure.Figure` built without pyplot,
so they work headless (files) and in notebooks alike, and save it when
given a path.
"""

import csv
import os

import numpy as np


def _figure(width, height):
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(
            "Plotting needs matplotlib: `pip install matplotlib`."
        ) from err
    return Figure(figsize=(width, height), layout="constrained")


def _save(figure, path):
    if path is not None:
        figure.savefig(os.fspath(path), dpi=120)
    return figure


def _draw_box(axes, box, colour, linewidth=1.5, fill_alpha=0.0):
    from matplotlib.patches import Rectangle

    x0, y0, x1, y1 = box
    # Pixel centres sit at integers: a box's edge is half a pixel out.
    corner, width, height = (x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0
    if fill_alpha > 0:
        axes.add_patch(
            Rectangle(corner, width, height, color=colour, alpha=fill_alpha, lw=0)
        )
    axes.add_patch(
        Rectangle(corner, width, height, fill=False, edgecolor=colour, lw=linewidth)
    )


def _as_rgb8(image, boxes):
    """Any image as uint8 RGB; None becomes a blank canvas around the boxes."""
    if image is None:
        height = int(np.ceil(boxes[:, 3].max())) + 1 if len(boxes) else 1
        width = int(np.ceil(boxes[:, 2].max())) + 1 if len(boxes) else 1
        return np.full((height, width, 3), 235, np.uint8)
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise ValueError(
            f"Expected an RGB image (H, W, 3). Received: shape {image.shape}"
        )
    image = image[..., :3]
    if image.dtype != np.uint8:
        # Floats in [0, 1], as matplotlib reads PNG files.
        image = np.clip(np.asarray(image, np.float64) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return image


def plot_word_attention(image, boxes, words, attention, path=None, title=None):
    """Each word's attention over an image's regions, drawn on the image.

    The first panel shows the image with its numbered region boxes; then
    one panel per word shades each region by the word's weight on it and
    outlines the region it attends to most; a heatmap of words against
    regions sits below.

    Args:
        image: RGB image `(H, W, 3)` (uint8, or floats in [0, 1]), a grey
            image `(H, W)`, or None to draw the boxes on a blank canvas.
        boxes: `(R, 4)` region boxes `x0, y0, x1, y1` in pixels.
        words: the `n` words shown, in caption order.
        attention: `(n, R)` weights of those words over the regions, such
            as rows of `scan_keras.evaluation.word_region_attention`.
        path: if given, the figure is saved there (PNG, PDF, ...).
        title: a title above the figure, e.g. the caption.

    Returns:
        The `matplotlib.figure.Figure`.
    """
    attention = np.asarray(attention, dtype=np.float64)
    boxes = np.asarray(boxes)
    image = _as_rgb8(image, boxes)
    if attention.shape != (len(words), len(boxes)):
        raise ValueError(
            "Expected `attention` of shape (n_words, n_regions) = "
            f"({len(words)}, {len(boxes)}). Received: {attention.shape}"
        )
    n_panels = len(words) + 1
    columns = min(n_panels, 6)
    rows = -(-n_panels // columns)
    figure = _figure(2.0 * columns, 2.1 * rows + 0.35 * len(words) + 1.2)
    grid = figure.add_gridspec(rows + 1, columns, height_ratios=[2.0] * rows + [
        0.25 * len(words) + 0.6
    ])
    panels = [figure.add_subplot(grid[k // columns, k % columns]) for k in range(n_panels)]
    panels[0].imshow(image)
    panels[0].set_title("regions", fontsize=9)
    for r, box in enumerate(boxes):
        _draw_box(panels[0], box, "white", linewidth=0.8)
        panels[0].text(box[0], box[1], str(r), color="yellow", fontsize=6, va="top")
    for panel, word, weights in zip(panels[1:], words, attention):
        # Dim the image so that the shading of the regions stands out.
        panel.imshow((np.asarray(image, np.float64) * 0.45).astype(np.uint8))
        for r in np.argsort(weights):  # strongest drawn last, on top
            _draw_box(panel, boxes[r], "orange", 0.0, fill_alpha=0.8 * weights[r])
        best = int(np.argmax(weights))
        _draw_box(panel, boxes[best], "red", linewidth=1.8)
        panel.set_title(f"{word!r}  {weights[best]:.2f}", fontsize=9)
    for panel in panels:
        panel.set_xticks([])
        panel.set_yticks([])
    heatmap = figure.add_subplot(grid[rows, :])
    shown = heatmap.imshow(attention, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    heatmap.set_yticks(range(len(words)), words, fontsize=8)
    heatmap.set_xticks(range(len(boxes)))
    heatmap.set_xlabel("region")
    figure.colorbar(shown, ax=heatmap, label="attention")
    if title:
        figure.suptitle(title, fontsize=10)
    return _save(figure, path)


def read_log(path):
    """The rows of a training `log.csv` as a dict of float columns."""
    with open(os.fspath(path)) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: the training log has no rows.")
    return {key: np.array([float(r[key]) for r in rows]) for key in rows[0]}


def plot_training_curves(logs, path=None):
    """Training loss and validation rsum per epoch, one line per run.

    Args:
        logs: a dict `{label: log}` where each log is the path of a
            `log.csv` written by `scan_keras.training.train` or the dict
            `read_log` returns.
        path: if given, the figure is saved there.

    Returns:
        The `matplotlib.figure.Figure`.
    """
    figure = _figure(9, 3.2)
    loss_axes, rsum_axes = figure.subplots(1, 2)
    for label, log in logs.items():
        log = read_log(log) if isinstance(log, (str, os.PathLike)) else log
        epochs = log["epoch"] + 1
        loss_axes.plot(epochs, log["loss"], marker="o", ms=3, label=label)
        if "val_rsum" in log:
            rsum_axes.plot(epochs, log["val_rsum"], marker="o", ms=3, label=label)
    loss_axes.set(xlabel="epoch", ylabel="hinge loss (hardest negatives)", title="training loss")
    rsum_axes.set(xlabel="epoch", ylabel="rsum (max 600)", title="validation recall")
    for axes in (loss_axes, rsum_axes):
        axes.grid(alpha=0.3)
        axes.legend()
    return _save(figure, path)
