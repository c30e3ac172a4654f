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

        # quality 65: photos stay clean at 100 dpi, and notebooks a third smaller than at 75
        set_matplotlib_formats("jpeg", pil_kwargs={"quality": 65})


_jpeg_inline_figures()


def draw_boxes(ax, image, boxes, labels, scores=None, title=None, linestyle="-", colour=None, width=2.0, captions=True):
    """Boxes with their labels (and scores) on `image`, or over what `ax` shows when image is None;
    each in its class's colour unless `colour` is given (to tell two models' boxes apart). captions=False:
    the boxes only (a crowded panel), still coloured by class."""
    if image is not None:
        ax.imshow(image)
    for i, (box, label) in enumerate(zip(boxes, labels)):
        x1, y1, x2, y2 = box
        edge = colour or COLOURS.get(label, "lime")
        ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=edge, lw=width, ls=linestyle))
        text = label if scores is None else f"{label} {scores[i]:.2f}"
        if captions:
            ax.text(x1, y1, text, color="white", fontsize=8, va="bottom", bbox={"facecolor": edge, "pad": 1, "lw": 0})
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)


def grid(n: int, ncols: int = 3, size: float = 3.0):
    nrows = max(1, (n + ncols - 1) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * 1.2 * nrows), dpi=DPI, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_axis_off()
    return fig, list(axes.flat)


def plot_history(metrics_csv: str | Path, best_epoch: int | None = None):
    """Training loss per step (faint) and per epoch, and validation mAP per epoch, from Lightning's CSV
    log; epochs are numbered from 1 as the training log prints them."""
    steps, step_losses, epochs = [], [], {}
    with open(metrics_csv) as f:
        for row in csv.DictReader(f):
            if row.get("train/loss_step"):
                steps.append(int(row["step"]))
                step_losses.append(float(row["train/loss_step"]))
            epoch = epochs.setdefault(int(row["epoch"]) + 1, {"last_step": 0})
            epoch["last_step"] = max(epoch["last_step"], int(row["step"]))
            epoch.update({k: float(v) for k, v in row.items() if v and k.startswith(("val", "train/loss_epoch"))})
    fig, (loss_ax, map_ax) = plt.subplots(1, 2, figsize=(10, 3.5), dpi=DPI)
    loss_ax.plot(steps, step_losses, color="tab:blue", alpha=0.3, lw=1, label="per step")
    ends = [(e["last_step"], e["train/loss_epoch"]) for e in epochs.values() if "train/loss_epoch" in e]
    if ends:
        loss_ax.plot(*zip(*ends), color="tab:blue", marker="o", label="epoch mean (at its last step)")
    loss_ax.set_xlabel("optimizer step"), loss_ax.set_ylabel("loss (sum of the detector's losses)")
    loss_ax.set_title("training loss"), loss_ax.legend(fontsize=8)
    for key, label in (
        ("val_real/map_50", "validation mAP@.5"),
        ("val_real/map", "validation mAP"),
    ):
        points = [(n, e[key]) for n, e in epochs.items() if key in e]
        if points:
            map_ax.plot(*zip(*points), marker="o", label=label)
    if best_epoch is not None:
        map_ax.axvline(best_epoch + 1, color="grey", ls="--", lw=1, label=f"kept: epoch {best_epoch + 1}")
    map_ax.set_xlabel("epoch"), map_ax.set_ylabel("mAP"), map_ax.set_ylim(0, 1)
    map_ax.set_xticks(sorted(epochs)), map_ax.set_title("validation mAP"), map_ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def parity_panel(albumentations_image, other_image, title: str, other_label: str = "NumPy + Pillow (Lambda)"):
    """albumentations | the other implementation | per-pixel max |difference| (grey levels), side by side."""
    diff = np.abs(albumentations_image.astype(np.int16) - other_image.astype(np.int16)).max(axis=2)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6), dpi=DPI)
    axes[0].imshow(albumentations_image), axes[0].set_title("albumentations 2.0.8 (training)", fontsize=9)
    axes[1].imshow(other_image), axes[1].set_title(other_label, fontsize=9)
    shown = axes[2].imshow(diff, cmap="magma", vmin=0, vmax=max(1, int(diff.max())))
    axes[2].set_title(f"|difference| per pixel, max {int(diff.max())} grey levels", fontsize=9)
    fig.colorbar(shown, ax=axes[2], fraction=0.046)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def size_bars(report: dict, unzipped_limit: int | None = None, zip_limit: int | None = None):
    """Per-package MB (10^6 bytes) before and after trimming, from a helpers.build.package report; with
    `unzipped_limit` (bytes), a second panel: the totals (pip install, trimmed, zipped) against that
    limit, and the zipped bar against `zip_limit` when given."""
    names = [n for n in report["per_package_before"] if report["per_package_before"][n] > 200_000]
    before = [report["per_package_before"][n] / 1e6 for n in names]
    after = [report["per_package_after"].get(n, 0) / 1e6 for n in names]
    if unzipped_limit is None:
        fig, ax = plt.subplots(figsize=(8, 3), dpi=DPI)
    else:
        fig, (ax, totals) = plt.subplots(1, 2, figsize=(11, 3.2), dpi=DPI, width_ratios=(3, 2))
    y = np.arange(len(names))
    ax.barh(y - 0.2, before, height=0.4, label="pip install")
    ax.barh(y + 0.2, after, height=0.4, label="trimmed")
    ax.set_yticks(y, names, fontsize=8), ax.set_xlabel("MB unzipped"), ax.legend(fontsize=8)
    ax.set_title("by package: as pip installs them vs trimmed", fontsize=9)
    if unzipped_limit is not None:
        rows = {
            "pip install": sum(report["per_package_before"].values()) / 1e6,
            "trimmed (unzipped)": report["unzipped_bytes"] / 1e6,
            "zipped": report["zipped_bytes"] / 1e6,
        }
        totals.barh(list(rows), list(rows.values()), color=["tab:blue", "tab:orange", "tab:green"])
        for i, value in enumerate(rows.values()):
            totals.text(value, i, f" {value:.0f} MB", va="center", fontsize=8)
        totals.axvline(unzipped_limit / 1e6, color="red", ls="--")
        totals.text(unzipped_limit / 1e6, 2.45, " Lambda's unzipped limit", color="red", fontsize=8, ha="right")
        if zip_limit is not None:
            totals.plot([zip_limit / 1e6] * 2, [1.55, 2.45], color="purple", ls="--")
            totals.text(
                zip_limit / 1e6, 1.5, f" {zip_limit / 1e6:.0f} MB zip limit", color="purple", fontsize=8, va="bottom"
            )
        totals.set_xlim(0, unzipped_limit / 1e6 * 1.1), totals.invert_yaxis()
        totals.set_xlabel("MB"), totals.tick_params(axis="y", labelsize=8)
        limits = f"{unzipped_limit / 1e6:.0f} MB unzipped" + (f", {zip_limit / 1e6:.0f} MB zipped" if zip_limit else "")
        totals.set_title(f"totals against Lambda's limits ({limits})", fontsize=9)
    fig.tight_layout()
    return fig
