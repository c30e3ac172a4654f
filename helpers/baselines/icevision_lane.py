"""The IceVision lane: the blog's own training stack (Python 3.8, icevision 0.12) as an independent reference.

`setup()` builds .venv-icevision from envs/icevision/requirements.txt with a CPython 3.8 (PATH or pyenv);
`run()` executes envs/icevision/blog_train.py there, which writes the blog's model.onnx + class_map.json
and IceVision's own transforms and predictions. The comparisons below then run in the main
environment against our NumPy preprocessing and our handler. The main environment never imports
IceVision; the two sides only share files.

    python -m helpers icevision [--full]     # (or make icevision) setup once, run (cached), print the report
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_iou

from helpers.build.interpreters import find_python
from helpers.evaluate.matching import greedy_pairs
from helpers.export.compare import tie_explained
from helpers.paths import ICEVISION_DIR, PROJECT_ROOT, shown
from helpers.runtime.config import PREPROCESS, PreprocessConfig
from helpers.runtime.decode import decode_image
from helpers.runtime.detections import Detections
from helpers.runtime.geometry import letterbox_geometry
from helpers.runtime.postprocess import to_detections
from helpers.runtime.preprocess import letterbox, preprocess

LANE = PROJECT_ROOT / "envs" / "icevision"
VENV = PROJECT_ROOT / ".venv-icevision"
LANE_PIP = "pip==24.0"  # pytorch-lightning 1.5.10 has metadata that pip >= 24.1 rejects
QUICK_EPOCHS, FULL_EPOCHS = 2, 20  # the blog trains for 20
MIN_IOU = 0.99  # a pair is the same detection
RETINANET_DETECTIONS_PER_IMG = 300  # torchvision's default, which the blog keeps: outputs at it are capped


class LaneUnavailable(RuntimeError):
    """No CPython 3.8 here, so the lane cannot be built (tests skip with this message)."""


class LaneFailed(RuntimeError):
    """The lane's install or training script failed; the message names the step and its log file."""


def _digest(*paths: Path, extra: str = "") -> str:
    hasher = hashlib.sha256(extra.encode())
    for path in paths:
        hasher.update(path.read_bytes())
    return hasher.hexdigest()


def _run(command: list, what: str, log: Path, **kwargs) -> None:
    """Run a lane step, appending its output to `log`; a failure names the step and the log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as sink:
        completed = subprocess.run([str(c) for c in command], stdout=sink, stderr=subprocess.STDOUT, **kwargs)
    if completed.returncode != 0:
        raise LaneFailed(f"{what} failed (exit {completed.returncode}); its output is in {log}")


def setup(venv: Path = VENV) -> Path:
    """Create (or reuse) the lane's virtualenv; returns its python. Rebuilt when requirements change."""
    requirements = LANE / "requirements.txt"
    stamp = venv / ".installed"
    python = venv / "bin" / "python"
    wanted = _digest(requirements)
    if stamp.exists() and stamp.read_text() == wanted and python.exists():
        return python
    base = find_python("3.8")
    if base is None:
        raise LaneUnavailable("the IceVision lane needs CPython 3.8 (on PATH or in pyenv); none found")
    log = venv.parent / f"{venv.name}.log"
    log.unlink(missing_ok=True)
    _run([base, "-m", "venv", "--clear", venv], "creating the lane venv", log)
    _run([python, "-m", "pip", "install", "--quiet", LANE_PIP], "installing pip 24.0 into the lane", log)
    _run([python, "-m", "pip", "install", "--quiet", "-r", requirements], "installing the lane requirements", log)
    stamp.write_text(wanted)
    return python


def run(out_dir: Path, epochs: int, python: Path | None = None) -> Path:
    """Run the blog's recipe in the lane (cached on the script, requirements and epochs)."""
    python = python or setup()
    script = LANE / "blog_train.py"
    stamp = out_dir / ".done"
    wanted = _digest(script, LANE / "requirements.txt", extra=f"epochs={epochs}")
    if stamp.exists() and stamp.read_text() == wanted:
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    log = out_dir / "lane.log"
    log.unlink(missing_ok=True)
    _run(
        [python, script, "--out", out_dir, "--epochs", epochs],
        "the IceVision training script",
        log,
        env=env,
        cwd=PROJECT_ROOT,
    )
    stamp.write_text(wanted)
    return out_dir


def load_reference(out_dir: Path) -> tuple[dict, dict]:
    """(arrays from reference.npz, reference.json) as written by blog_train.py."""
    with np.load(out_dir / "reference.npz") as arrays:
        return {k: arrays[k] for k in arrays.files}, json.loads((out_dir / "reference.json").read_text())


def preprocessing_parity(out_dir: Path, config: PreprocessConfig = PREPROCESS) -> dict:
    """Our NumPy letterbox/normalise vs IceVision's valid transforms (albumentations 1.0.3 + its OpenCV)
    on every image the lane processed, in two separate steps:

    * decode: our decode_image on the JPEG bytes vs the pixels IceVision's loader got from Pillow 8.4;
    * transforms: our letterbox/preprocess applied to IceVision's own decoded pixels vs its output
      (geometry, uint8 letterbox, normalised tensor).
    """
    arrays, reference = load_reference(out_dir)
    figures = {
        "images": len(reference["images"]),
        "normalized_images": len(arrays["normalized"]),
        "decode_max_abs_diff": 0,
        "decode_mean_abs_diff": 0.0,
        "geometry_mismatches": [],
        "letterbox_max_abs_diff": 0,
        "normalized_max_abs_diff": 0.0,
    }
    decode_sum, decode_count = 0, 0
    for index, name in enumerate(reference["images"]):
        theirs = arrays[f"decoded_{index}"]
        ours = decode_image((PROJECT_ROOT / name).read_bytes(), pad_fill=config.pad_fill)
        decode_diff = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
        figures["decode_max_abs_diff"] = max(figures["decode_max_abs_diff"], int(decode_diff.max()))
        decode_sum, decode_count = decode_sum + int(decode_diff.sum()), decode_count + decode_diff.size
        boxed, geometry = letterbox(theirs, config)
        # The six fields the lane records (orig, new sizes, pads); not our decode-time reduction, the seventh.
        if list(dataclasses.astuple(geometry))[:6] != arrays["geometry"][index].tolist():
            figures["geometry_mismatches"].append(name)
        letterbox_diff = np.abs(boxed.astype(np.int16) - arrays["letterboxed"][index].astype(np.int16))
        figures["letterbox_max_abs_diff"] = max(figures["letterbox_max_abs_diff"], int(letterbox_diff.max()))
        if index < len(arrays["normalized"]):
            tensor, _ = preprocess(theirs, config)
            diff = float(np.abs(tensor[0].transpose(1, 2, 0) - arrays["normalized"][index]).max())
            figures["normalized_max_abs_diff"] = max(figures["normalized_max_abs_diff"], diff)
    figures["decode_mean_abs_diff"] = decode_sum / decode_count
    return figures


def compare_predictions(ours: list[dict], theirs: dict, geometry, class_map) -> dict:
    """Our handler's detections vs IceVision's `predict` (model-input pixels), in original pixels.
    IceVision's raw outputs go through the handler's own postprocess first (restore, clip, drop what
    lies wholly in the padding, round), so only the model and the preprocessing can differ.

    Pairs: same label, IoU >= MIN_IOU, best first. Unpaired detections are counted as ties when
    helpers.export.compare's rule explains them (an NMS twin scored within 1%, or the tail of a capped output),
    else as unexplained: a barely trained RetinaNet scores its 300 boxes within ~0.01 of each other, so
    an exact tie that NMS breaks the other way can start a short cascade of different suppressions."""
    mine = Detections.from_json(ours, class_map)
    restored = to_detections(theirs["boxes"], theirs["scores"], theirs["labels"], geometry, 0.0, len(theirs["scores"]))
    other = Detections.from_json(restored.to_json(class_map), class_map)  # rounded as the handler rounds
    iou = np.zeros((len(mine), len(other)))
    if iou.size:
        iou = box_iou(torch.from_numpy(mine.boxes), torch.from_numpy(other.boxes)).numpy()
        iou[mine.labels[:, None] != other.labels[None, :]] = 0.0
    pairs, only_mine, only_other = greedy_pairs(1.0 - iou, 1.0 - MIN_IOU)
    at_cap = len(theirs["boxes"]) >= RETINANET_DETECTIONS_PER_IMG
    ties = sum(tie_explained(i, mine, other, at_cap) for i in only_mine)
    ties += sum(tie_explained(j, other, mine, at_cap) for j in only_other)
    return {
        "ours": len(mine),
        "icevision": len(other),
        "pairs": len(pairs),
        "min_iou": min((float(iou[i, j]) for i, j in pairs), default=1.0),
        "max_score_diff": max((float(abs(mine.scores[i] - other.scores[j])) for i, j in pairs), default=0.0),
        "ties": ties,
        "unexplained": len(only_mine) + len(only_other) - ties,
    }


def handler_env(out_dir: Path) -> dict:
    """Handler configuration that serves the blog's files as a user would: model + {name: id} class map,
    every detection the graph emits (it was exported with score_thresh 0 and at most 300 per image)."""
    return {
        "MODEL_PATH": str(out_dir / "model.onnx"),
        "CLASS_MAP_PATH": str(out_dir / "class_map.json"),
        "SCORE_THRESHOLD": "0",
        "MAX_DETECTIONS": "10000",
        "LOG_LEVEL": "WARNING",
    }


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def prediction_parity(out_dir: Path, same_pixels: bool = True) -> list[dict]:
    """Our handler (direct invocation) vs IceVision's predictions, per sample image.

    same_pixels: send the pixels IceVision decoded (Pillow 8.4), losslessly as PNG, so that both sides
    start from identical pixels; otherwise send the original JPEG, which our Pillow decodes slightly
    differently (what serving a lane-trained model really sees).
    """
    from helpers.runtime import handler as lambda_handler

    state = lambda_handler.init(handler_env(out_dir))
    arrays, reference = load_reference(out_dir)
    rows = []
    for theirs in reference["predictions"]:
        pixels = arrays[f"decoded_{reference['images'].index(theirs['image'])}"]
        data = _png(pixels) if same_pixels else (PROJECT_ROOT / theirs["image"]).read_bytes()
        response = lambda_handler.handler({"image": base64.b64encode(data).decode()}, None)
        if "detections" not in response:
            raise LaneFailed(f"our handler refused {theirs['image']}: {response}")
        geometry = letterbox_geometry(*pixels.shape[:2], state.detector.config.image_size)
        rows.append(
            {
                "image": theirs["image"],
                **compare_predictions(response["detections"], theirs, geometry, state.detector.class_map),
            }
        )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Run the IceVision lane and print its parity figures.")
    parser.add_argument("--full", action="store_true", help=f"the blog's {FULL_EPOCHS} epochs (default {QUICK_EPOCHS})")
    args = parser.parse_args(argv)
    out_dir = ICEVISION_DIR / ("full" if args.full else "quick")
    try:
        print("setting up .venv-icevision (first time: ~2 min, 2.7 GB) ...", flush=True)
        python = setup()
        print(f"running the blog's recipe -> {shown(out_dir)} ...", flush=True)
        run(out_dir, FULL_EPOCHS if args.full else QUICK_EPOCHS, python)
        report = {
            "versions": json.loads((out_dir / "versions.json").read_text()),
            "preprocessing": preprocessing_parity(out_dir),
            "predictions_same_pixels": prediction_parity(out_dir, same_pixels=True),
            "predictions_from_jpeg": prediction_parity(out_dir, same_pixels=False),
        }
    except (LaneUnavailable, LaneFailed) as err:
        print(f"icevision lane: {err}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
