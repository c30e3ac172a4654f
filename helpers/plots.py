"""Matplotlib figures for the notebooks: boxes on images, training curves, parity heatmaps, sizes."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

COLOURS = {"carton": "tab:orange", "milk_bottle": "tab:blue", "water_bottle": "tab:cyan", "can": "tab:red"}
DPI = 100  # readable, yet small enough to commit as JPEG


def _jpeg_inline_figures() -> None:
    """In Jupyter, embed figures as JPEG (several times smaller than PNG for photos)."""
    if "IPython" in sys.modules and sys.modules["IPython"].get_ipython() is not None:
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("jpeg")


_jpeg_inline_figures()


def draw_boxes(ax, image, boxes, labels, scores=None, title=None, linestyle="-"):
    ax.imshow(image)
    for i, (box, label) in enumerate(zip(boxes, labels)):
        x1, y1, x2, y2 = box
        colour = COLOURS.get(label, "lime")
        ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=colour, lw=2, ls=linestyle))
        text = label if scores is None else f"{label} {scores[i]:.2f}"
        ax.text(x1, y1, text, color="white", fontsize=7, va="bottom", bbox={"facecolor": colour, "pad": 1, "lw": 0})
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)


def grid(n: int, ncols: int = 3, size: float = 3.0):
    nrows = max(1, (n + ncols - 1) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * 1.2 * nrows), dpi=DPI, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_axis_off()
    return fig, list(axes.flat)


def read_metrics(metrics_csv: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Lightning's CSV log -> {column: [(epoch, value), ...]} for non-empty cells."""
    series: dict[str, list[tuple[int, float]]] = {}
    with open(metrics_csv) as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key not in ("epoch", "step") and value not in ("", None):
                    series.setdefault(key, []).append((int(row["epoch"]), float(value)))
    return series


def plot_history(metrics_csv: str | Path):
    series = read_metrics(metrics_csv)
    fig, (loss_ax, map_ax) = plt.subplots(1, 2, figsize=(9, 3), dpi=DPI)
    for key in ("train/loss_epoch",):
        if key in series:
            epochs, values = zip(*series[key])
            loss_ax.plot(epochs, values, marker="o", label=key)
    loss_ax.set_xlabel("epoch"), loss_ax.set_title("training loss"), loss_ax.legend(fontsize=7)
    for key in ("val_real/map", "val_real/map_50", "val_synthetic/map", "val_synthetic/map_50"):
        if key in series:
            epochs, values = zip(*series[key])
            map_ax.plot(epochs, values, marker="o", label=key)
    map_ax.set_xlabel("epoch"), map_ax.set_title("validation mAP"), map_ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def parity_panel(albumentations_image, numpy_image, title: str):
    """albumentations | NumPy | |difference| side by side."""
    diff = np.abs(albumentations_image.astype(np.int16) - numpy_image.astype(np.int16)).max(axis=2)
    fig, axes = plt.subplots(1, 3, figsize=(9, 3), dpi=DPI)
    axes[0].imshow(albumentations_image), axes[0].set_title("albumentations 2.0.8", fontsize=8)
    axes[1].imshow(numpy_image), axes[1].set_title("NumPy + Pillow (Lambda)", fontsize=8)
    shown = axes[2].imshow(diff, cmap="magma", vmin=0, vmax=max(1, int(diff.max())))
    axes[2].set_title(f"|difference| max {int(diff.max())}", fontsize=8)
    fig.colorbar(shown, ax=axes[2], fraction=0.046)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def size_bars(report: dict):
    """Per-package MiB before and after trimming, from a helpers.package report."""
    names = [n for n in report["per_package_before"] if report["per_package_before"][n] > 200_000]
    before = [report["per_package_before"][n] / 2**20 for n in names]
    after = [report["per_package_after"].get(n, 0) / 2**20 for n in names]
    fig, ax = plt.subplots(figsize=(8, 3), dpi=DPI)
    y = np.arange(len(names))
    ax.barh(y - 0.2, before, height=0.4, label="pip install")
    ax.barh(y + 0.2, after, height=0.4, label="trimmed")
    ax.set_yticks(y, names, fontsize=7), ax.set_xlabel("MiB unzipped"), ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
