"""The detector as one static folder that runs in the browser, with no server process behind it.

    python -m helpers web [--full] [--model MODEL.onnx] [--out DIR]

The folder (default: the mode's artifacts/<mode>/web/) holds the demo page (helpers/local/page/), the
model (default: the FP32 model.onnx, see default_model), config.json (the model's contract: what the page letterboxes, its
output names, classes and served threshold, the normalisation constants as the runtime computes them),
letterbox_kernel.wasm (helpers/runtime/letterbox_kernel.c, the Lambda kernel's own source, compiled by
clang for wasm32) and ONNX Runtime Web's WASM build (web/node_modules: `make web` installs the pinned
package). Any static file server serves it; `python -m helpers serve` serves it beside the Lambda's
answers. docs/browser.md says what runs where.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from helpers.export.onnx_export import read_contract
from helpers.local.serve import PAGE_DIR
from helpers.paths import PROJECT_ROOT, not_found, quick_unless, run_artifacts, shown
from helpers.runtime.contract import served_threshold
from helpers.runtime.kernel import KERNEL_PATH
from helpers.runtime.preprocess import normalisation_constants

SOURCE = KERNEL_PATH.with_name("letterbox_kernel.c")
ORT_DIST = PROJECT_ROOT / "web" / "node_modules" / "onnxruntime-web" / "dist"
#: ONNX Runtime Web's WASM-only bundle and the one WASM build it loads (SIMD; run on one thread, so no
#: cross-origin isolation is needed and any static server will do).
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
KERNEL_WASM = "letterbox_kernel.wasm"
#: The same source as the native build, freestanding: no libc, no allocation (the page lays the buffers
#: out in linear memory above __heap_base). -ffp-contract=off as natively, so Normalize rounds in two
#: float32 steps; -Wl,--no-entry: a library; every symbol defined (wasm-ld refuses undefined ones).
WASM_FLAGS = (
    "--target=wasm32",
    "-std=c11",
    "-O3",
    "-msimd128",
    "-mbulk-memory",
    "-ffreestanding",
    "-nostdlib",
    "-ffp-contract=off",
    "-Wall",
    "-Werror",
    "-Wl,--no-entry",
    "-Wl,--export=helpers_letterbox",
    "-Wl,--export=__heap_base",
    "-Wl,--strip-all",
)


def default_model(full: bool = False) -> Path:
    """The FP32 model.onnx, not the shipped INT8 one: ONNX Runtime Web's FP32 kernels give the handler's
    detections (docs/browser.md), while INT8 results depend on which quantised kernels run (the native
    ones at each optimisation level and the WASM ones differ by up to a few hundredths in score), so the
    INT8 model in the page is not the Lambda's detector. `--model` builds the folder with any other."""
    return run_artifacts(quick=quick_unless(full)).onnx


class WebBuildError(RuntimeError):
    """A tool or an input the static folder needs is missing."""


def build_kernel(out: Path) -> Path:
    """letterbox_kernel.c -> `out` (.wasm), by clang's wasm32 target and wasm-ld (Debian: clang lld)."""
    clang = shutil.which("clang")
    if clang is None or shutil.which("wasm-ld") is None:
        raise WebBuildError("clang and wasm-ld are needed for the WASM kernel (Debian: apt-get install clang lld)")
    completed = subprocess.run([clang, *WASM_FLAGS, "-o", str(out), str(SOURCE)], capture_output=True, text=True)
    if completed.returncode != 0:
        raise WebBuildError(f"building {SOURCE.name} for wasm32 failed: {completed.stderr.strip()}")
    return out


def page_config(model: Path) -> dict:
    """What the page needs to know of the model: its contract, read from the model's own metadata."""
    contract = read_contract(model)
    config = contract.preprocess
    mean, denominator, pad = (values.tolist() for values in normalisation_constants(config))
    return {
        "model": model.name,
        "input_name": contract.input_name,
        "output_names": list(contract.output_names),
        "image_size": config.image_size,
        "interpolation": config.interpolation,
        "pad_fill": list(config.pad_fill),
        "normalise": {"mean": mean, "denominator": denominator, "pad": pad},  # float32 values, exact in JSON
        "classes": list(contract.classes.names),
        "score_threshold": served_threshold(None, None, contract.score_threshold),
    }


def build(model: Path, out: Path, ort_dist: Path = ORT_DIST) -> Path:
    """The static folder at `out` (replaced): page, model, config.json, WASM kernel, ONNX Runtime Web."""
    missing = [name for name in ORT_FILES if not (ort_dist / name).is_file()]
    if missing:
        raise WebBuildError(f"{', '.join(missing)} not in {shown(ort_dist)}: `make web` installs onnxruntime-web")
    config = page_config(model)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(PAGE_DIR, partial)
    (partial / "ort").mkdir()
    for name in ORT_FILES:
        shutil.copyfile(ort_dist / name, partial / "ort" / name)
    shutil.copyfile(model, partial / model.name)
    build_kernel(partial / KERNEL_WASM)
    (partial / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    partial.replace(out)
    return out


def folder_bytes(folder: Path) -> dict[str, int]:
    """Bytes a first visit downloads, by part of the static folder: the page, ONNX Runtime, the kernel,
    the model."""
    parts = {"page": 0, "onnxruntime": 0, "kernel": 0, "model": 0}
    model = json.loads((folder / "config.json").read_text())["model"]
    for path in folder.rglob("*"):
        if path.is_file():
            part = "onnxruntime" if path.parent.name == "ort" else "kernel" if path.name == KERNEL_WASM else None
            parts[part or ("model" if path.name == model else "page")] += path.stat().st_size
    return parts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers web", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="default: the mode's model.onnx (FP32)")
    parser.add_argument("--out", type=Path, help="default: the mode's web/ folder")
    parser.add_argument("--full", action="store_true", help="full mode's artefacts (default: quick, as `make run`)")
    args = parser.parse_args(argv)
    model = args.model or default_model(args.full)
    out = args.out or run_artifacts(quick=quick_unless(args.full)).web
    if not model.is_file():
        print(f"error: {not_found('model', model, quick_unless(args.full))}", file=sys.stderr)
        return 2
    try:
        build(model, out)
    except (WebBuildError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    size = sum(folder_bytes(out).values())
    print(f"built {shown(out)} ({size / 1e6:.1f} MB, model {model.name}); serve it with any static file server")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
