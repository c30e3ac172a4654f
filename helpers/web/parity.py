"""The browser's detector against the Lambda handler's, measured in Chromium on the same image files.

    python -m helpers web-parity [--full] [--model MODEL.onnx] [--threshold T] [--out parity.json]

The static folder (helpers.web.build) is served by a plain static file server (http.server, nothing of
the project's behind it) and driven by Playwright in the system's Chromium. Per image:

* tensor: the WASM kernel's model input against the Python runtime's (helpers.runtime.preprocess) for
  the same pixels, the browser's own decode: max |diff|, 0 when the two letterboxes agree bit for bit;
* decode: the browser's pixels against Pillow's (helpers.runtime.decode): max and mean grey-level
  difference, and the share of channel values that differ;
* detections: the page's against the handler's (invoked in this process on the file's bytes), paired
  one to one at the same label and IoU >= 0.99 (helpers.evaluate.matching), agreeing when their scores
  are within 0.01 too. Each detection left unpaired, or paired with a score further off, is explained
  by a third run, the native ONNX Runtime on the browser's own tensor: "threshold" when its score is
  within 0.01 of the threshold (its counterpart fell on the other side), else "decode" when that run
  sides with the browser (the pixels made the difference), "runtime" when it sides with the handler
  (ONNX Runtime Web's kernels against the native ones on one tensor);
* timings: the page's (decode, letterbox, inference) against the handler's in the same run.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import shutil
import sys
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from helpers.data.dataset import SAMPLE_DIR
from helpers.evaluate.matching import greedy_pairs, iou_matrix
from helpers.paths import THUMBNAILS_DIR, not_found, quick_unless, shown
from helpers.runtime import handler
from helpers.runtime.contract import served_threshold
from helpers.runtime.decode import decode_for_model
from helpers.runtime.detections import Detections
from helpers.runtime.model import Detector
from helpers.runtime.postprocess import to_detections
from helpers.runtime.preprocess import preprocess
from helpers.web.build import build, default_model, folder_bytes

MIN_IOU = 0.99
SCORE_TOLERANCE = 0.01
MAX_DETECTIONS = 100
CHROMIUM_FLAGS = ("--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking")

#: In the page: one file's bytes through the page's detector; the pixels and the tensor come back as
#: base64 so that Python compares them value by value.
_DETECT_JS = """async ([data, threshold, limit]) => {
  const detector = await window.fridge;
  if (!detector) throw new Error(document.getElementById("browser-error").textContent);
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  const result = await detector.detect(new Blob([bytes]), threshold, limit);
  const encode = (array) => {
    const u8 = new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
    let text = "";
    for (let i = 0; i < u8.length; i += 32768) text += String.fromCharCode(...u8.subarray(i, i + 32768));
    return btoa(text);
  };
  const { image, tensor, detections, timings_ms } = result;
  return { width: image.width, height: image.height, rgba: encode(image.rgba), tensor: encode(tensor), detections, timings_ms };
}"""


def shipped_images() -> list[Path]:
    """Every real image the project ships: the fridge photos (data/fridge-sample) and the object photos
    (data/fridge-classification-small150)."""
    return sorted((SAMPLE_DIR / "images").glob("*.jpg")) + sorted(THUMBNAILS_DIR.glob("*.jpg"))


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


def static_server(folder: Path) -> ThreadingHTTPServer:
    """Python's own static file server on a free port, serving `folder`, in a thread."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _detections(items: list[dict], names: tuple[str, ...]) -> Detections:
    ids = {name: i + 1 for i, name in enumerate(names)}
    return Detections([d["box"] for d in items], [d["score"] for d in items], [ids[d["label"]] for d in items])


def pair(a: Detections, b: Detections) -> list[tuple[int, int]]:
    """Same-label pairs at IoU >= MIN_IOU, the most overlapping first, one to one."""
    cost = -iou_matrix(a.boxes, b.boxes)
    cost[a.labels[:, None] != b.labels[None, :]] = np.inf
    return greedy_pairs(cost, -MIN_IOU).pairs


def agreeing(a: Detections, b: Detections) -> list[tuple[int, int]]:
    """The pairs whose scores are within SCORE_TOLERANCE too."""
    return [(i, j) for i, j in pair(a, b) if abs(a.scores[i] - b.scores[j]) <= SCORE_TOLERANCE]


def _found_in(found: Detections, index: int, other: Detections) -> bool:
    return bool(agreeing(found.take([index]), other))


def explain(side: str, index: int, found: Detections, reference: Detections, threshold: float) -> str:
    """Why detection `index` of `found` (the browser's or the handler's, `side`) has no agreeing
    counterpart: `reference` is the native ONNX Runtime on the browser's own tensor."""
    if abs(found.scores[index] - threshold) <= SCORE_TOLERANCE:
        return "threshold"
    in_reference = _found_in(found, index, reference)
    if side == "browser":
        return "decode" if in_reference else "runtime"
    return "runtime" if in_reference else "decode"


def _decode_figures(rgb: np.ndarray, data: bytes) -> dict:
    pillow = decode_for_model(data).pixels
    if pillow.shape != rgb.shape:
        return {"shape_browser": list(rgb.shape), "shape_pillow": list(pillow.shape)}
    diff = np.abs(pillow.astype(np.int16) - rgb.astype(np.int16))
    return {"max": int(diff.max()), "mean": float(diff.mean()), "differing": float((diff > 0).mean())}


def compare_image(path: Path, answer: dict, native: Detector, threshold: float) -> dict:
    """One image: the page's answer against the Python runtime (tensor, decode) and the handler."""
    height, width = answer["height"], answer["width"]
    rgba = np.frombuffer(base64.b64decode(answer["rgba"]), np.uint8).reshape(height, width, 4)
    rgb = rgba[:, :, :3]
    browser_tensor = np.frombuffer(base64.b64decode(answer["tensor"]), np.float32).reshape(native.contract.input_shape)
    python_tensor, geometry = preprocess(rgb, native.config)
    data = path.read_bytes()
    served = handler.handler({"image": base64.b64encode(data).decode(), "threshold": threshold}, None)
    names = native.class_map.names
    browser, lambda_ = _detections(answer["detections"], names), _detections(served["detections"], names)
    outputs = native.session.run(native.output_names, {native.input_name: browser_tensor})
    reference = to_detections(*outputs, geometry, threshold, MAX_DETECTIONS)
    pairs, overlapping = agreeing(browser, lambda_), pair(browser, lambda_)
    unpaired = [("browser", i, browser) for i in sorted(set(range(len(browser))) - {i for i, _ in pairs})]
    unpaired += [("lambda", j, lambda_) for j in sorted(set(range(len(lambda_))) - {j for _, j in pairs})]
    return {
        "image": path.name,
        "size": f"{width}x{height}",
        "tensor_max_abs_diff": float(np.abs(browser_tensor - python_tensor).max()),
        "decode": _decode_figures(rgb, data),
        "detections_browser": len(browser),
        "detections_lambda": len(lambda_),
        "agreeing": len(pairs),
        # over the pairs at IoU >= MIN_IOU, whatever their scores
        "score_max_abs_diff": max((abs(browser.scores[i] - lambda_.scores[j]) for i, j in overlapping), default=0.0),
        "box_max_abs_diff_px": max(
            (np.abs(browser.boxes[i] - lambda_.boxes[j]).max() for i, j in overlapping), default=0.0
        ),
        "unpaired": [
            {
                "side": side,
                "label": names[found.labels[k] - 1],
                "score": round(float(found.scores[k]), 5),
                "reason": explain(side, k, found, reference, threshold),
            }
            for side, k, found in unpaired
        ],  # fmt: skip
        "timings_browser_ms": answer["timings_ms"],
        "timings_lambda_ms": served["timings_ms"],
    }


def _summary(rows: list[dict], folder: Path) -> dict:
    agreeing_count = sum(r["agreeing"] for r in rows)
    total = sum(r["detections_browser"] + r["detections_lambda"] - r["agreeing"] for r in rows)
    reasons: dict[str, int] = {}
    for row in rows:
        for item in row["unpaired"]:
            reasons[item["reason"]] = reasons.get(item["reason"], 0) + 1
    decodes = [r["decode"] for r in rows if "max" in r["decode"]]
    sizes = sorted({r["size"] for r in rows})

    def medians(key: str, stages: tuple[str, ...]) -> dict:  # per image size: the photos, the thumbnails
        of = lambda size, stage: float(np.median([r[key][stage] for r in rows if r["size"] == size]))  # noqa: E731
        return {size: {stage: round(of(size, stage), 2) for stage in stages} for size in sizes}

    return {
        "images": len(rows),
        "tensor_max_abs_diff": max(r["tensor_max_abs_diff"] for r in rows),
        "decode_max_grey_levels": max((d["max"] for d in decodes), default=None),
        "decode_mean_grey_levels": float(np.mean([d["mean"] for d in decodes])) if decodes else None,
        "decode_identical_images": sum(d["max"] == 0 for d in decodes),
        "detections_browser": sum(r["detections_browser"] for r in rows),
        "detections_lambda": sum(r["detections_lambda"] for r in rows),
        "agreeing": agreeing_count,
        "agreeing_fraction": agreeing_count / total if total else 1.0,
        "score_max_abs_diff": max(r["score_max_abs_diff"] for r in rows),
        "box_max_abs_diff_px": float(max(r["box_max_abs_diff_px"] for r in rows)),
        "unpaired_by_reason": reasons,
        "median_ms_browser": medians("timings_browser_ms", ("decode", "letterbox", "inference", "total")),
        "median_ms_lambda": medians("timings_lambda_ms", ("decode", "preprocess", "inference", "total")),
        "download_bytes": folder_bytes(folder),
    }


def measure(model: Path, images: list[Path], threshold: float | None = None, browser=None) -> dict:
    """The parity figures of `model` in Chromium against the handler, on `images` (default threshold:
    the model's served one; `browser`: a Playwright Chromium to use, else one is launched).
    -> {"model", "threshold", "summary", "images": [per-image rows]}."""
    if browser is None:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            launched = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=list(CHROMIUM_FLAGS))
            try:
                return measure(model, images, threshold, launched)
            finally:
                launched.close()
    native = Detector(model)
    threshold = served_threshold(threshold, None, native.contract.score_threshold)
    handler.init({"MODEL_PATH": str(model), "LOG_LEVEL": "WARNING", "METRICS_NAMESPACE": ""})
    with tempfile.TemporaryDirectory() as tmp:
        folder = build(model, Path(tmp) / "web")
        server, page = static_server(folder), browser.new_page()
        try:
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/index.html")
            ask = lambda path: page.evaluate(  # noqa: E731
                _DETECT_JS, [base64.b64encode(path.read_bytes()).decode(), threshold, MAX_DETECTIONS]
            )
            ask(images[0])  # the first run pays ONNX Runtime Web's warm-up; the timings are of warm runs
            rows = [compare_image(path, ask(path), native, threshold) for path in images]
            summary = _summary(rows, folder)
        finally:
            page.close()
            server.shutdown()
            server.server_close()
    return {"model": shown(model), "threshold": threshold, "summary": summary, "images": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers web-parity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="default: the mode's model.onnx (FP32), as `web` builds")
    parser.add_argument("--threshold", type=float, help="default: the model's served threshold")
    parser.add_argument("--out", type=Path, help="also write the figures, per image, as JSON here")
    parser.add_argument("--full", action="store_true", help="full mode's artefacts (default: quick, as `make run`)")
    args = parser.parse_args(argv)
    model = args.model or default_model(args.full)
    if not model.is_file():
        print(f"error: {not_found('model', model, quick_unless(args.full))}", file=sys.stderr)
        return 2
    report = measure(model, shipped_images(), args.threshold)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({"model": report["model"], "threshold": report["threshold"], **report["summary"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
