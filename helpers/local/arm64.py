"""arm64 proven, not assumed: the arm64 zip run on an emulated Graviton, compared with x86_64.

On arm64 Lambda, /sys/devices/system/cpu is not readable, and onnxruntime builds before the fix for
onnxruntime#10038 aborted at import there, because cpuinfo could not parse the possible/present CPU
lists. This check reproduces that environment on an x86_64 machine:

- Debian's own aarch64 CPython (its .debs fetched with apt into a private state folder, no system
  change, unpacked into a sysroot), run by qemu-user (Debian package qemu-user-static);
- inside a private mount namespace (`unshare -m`) with an empty tmpfs over /sys/devices/system/cpu;
- the arm64 zip, built for that Python, driven by awslambdaric as in helpers.local.invoke.

It runs the handler on real images and compares every detection with the x86_64 zip's, and checks
that the two zips' letterbox kernels give bit-identical model inputs (the x86_64 one is held equal to
albumentations by tests/test_preprocess.py). The arm64 zip's kernel needs Debian's
gcc-aarch64-linux-gnu.

    python -m helpers arm64 [--full] [IMAGE ...]    # exit 0: equal; 1: not equal; 2: cannot run here
"""

from __future__ import annotations

import argparse
import base64
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from helpers.build import interpreters, native, package
from helpers.local import emulation
from helpers.local.invoke import invoke_zip
from helpers.paths import SAMPLE_DIR, not_found, quick_unless, run_artifacts, shown

#: Emulated and native float kernels sum in different orders; the response rounds boxes to 0.01 px.
BOX_TOLERANCE_PX = 0.5
SCORE_TOLERANCE = 1e-3


def _summary(response: dict) -> list[tuple[str, list[float], float]]:
    return [(d["label"], d["box"], d["score"]) for d in response["detections"]]


def compare_responses(native: list[dict], emulated: list[dict]) -> dict:
    """Per image: same labels in the same order, and the largest box and score differences."""
    box_diff = score_diff = 0.0
    labels_equal = len(native) == len(emulated)
    for a, b in zip(native, emulated):
        a_detections, b_detections = _summary(a), _summary(b)
        labels_equal &= [d[0] for d in a_detections] == [d[0] for d in b_detections]
        for (_, box_a, score_a), (_, box_b, score_b) in zip(a_detections, b_detections):
            box_diff = max(box_diff, *(abs(p - q) for p, q in zip(box_a, box_b)))
            score_diff = max(score_diff, abs(score_a - score_b))
    return {
        "labels_equal": labels_equal,
        "box_max_abs_diff_px": round(box_diff, 4),
        "score_max_abs_diff": round(score_diff, 6),
        "equal": labels_equal and box_diff <= BOX_TOLERANCE_PX and score_diff <= SCORE_TOLERANCE,
    }


_TENSOR_DIGESTS = """
import hashlib, sys
sys.path.insert(0, sys.argv[1])
from helpers.runtime.decode import decode_for_model
from helpers.runtime.kernel import load_kernel
from helpers.runtime.preprocess import preprocess
assert load_kernel() is not None, "no letterbox kernel in the zip"
for path in sys.argv[2:]:
    with open(path, "rb") as f:
        print(hashlib.sha256(preprocess(decode_for_model(f.read()))[0].tobytes()).hexdigest())
"""


def tensor_digests(zip_path: Path, command: list[str], images: list[Path]) -> list[str]:
    """sha256 of each image's model input, computed by the zip's own runtime (its letterbox kernel
    required) in the isolated interpreter `command` starts."""
    with tempfile.TemporaryDirectory() as unzipped:
        zipfile.ZipFile(zip_path).extractall(unzipped)
        run = subprocess.run(
            [*command, "-I", "-S", "-c", _TENSOR_DIGESTS, unzipped, *map(str, images)], capture_output=True, text=True
        )
    if run.returncode != 0:
        raise RuntimeError(f"preprocessing in {zip_path.name} failed: {run.stderr.strip().splitlines()[-1:]}")
    return run.stdout.split()


def check(images: list[Path], model: Path, threshold: float = 0.3) -> dict:
    """Build both zips, run `images` through each (arm64 emulated, CPU sysfs hidden), compare."""
    command, python = emulation.emulated_arm64_command()  # fail early, before building anything
    try:
        native.compiler_for("arm64")
    except native.CompilerMissing as err:
        raise emulation.EmulationUnavailable(f"{err}: install Debian's gcc-aarch64-linux-gnu") from None
    dist = run_artifacts().dist_dir / "emulated"
    events = [{"image": base64.b64encode(Path(p).read_bytes()).decode(), "threshold": threshold} for p in images]
    env = {"MODEL_PATH": str(Path(model).resolve()), "LOG_LEVEL": "WARNING", "METRICS_NAMESPACE": ""}
    reports, digests = {}, {}
    commands = {"x86_64": ("3.12", [str(interpreters.find_python("3.12"))]), "arm64": (python, command)}
    for arch, (version, interpreter) in commands.items():
        built = package.build(arch, version, out_dir=dist / arch)
        reports[arch] = invoke_zip(built["zip"], events, env, arch=arch, python=version, timeout=3600)
        if reports[arch]["init_error"]:
            raise RuntimeError(f"{arch} init failed: {reports[arch]['init_error']['errorMessage']}")
        digests[arch] = tensor_digests(Path(built["zip"]), interpreter, images)
    emulated = reports["arm64"]
    return {
        "images": [shown(p) for p in images],
        "arm64_python": emulated["python"],
        "sysfs_hidden": emulation.HIDDEN_SYSFS,
        "cpuinfo_messages": [line for line in emulated["stdout"].splitlines() if "cpuinfo" in line.lower()],
        "onnxruntime_extension_loaded": [p for p in emulated["libraries_from_package"] if "onnxruntime_pybind" in p],
        "detections": {
            arch: sum(len(r["detections"]) for r in report["responses"]) for arch, report in reports.items()
        },
        "letterbox_kernel_loaded": [p for p in emulated["libraries_from_package"] if "_letterbox_kernel" in p],
        "model_inputs_bit_identical": digests["arm64"] == digests["x86_64"],
        **compare_responses(reports["x86_64"]["responses"], emulated["responses"]),
        "emulated_seconds_per_image": sum(emulated["latencies_ms"]) / 1e3 / max(len(images), 1),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Run the arm64 zip under emulation and compare it with x86_64.")
    parser.add_argument("images", nargs="*", help="default: two of the bundled sample photos")
    parser.add_argument("--model", help="ONNX model (default: the mode's model.onnx)")
    parser.add_argument(
        "--full", action="store_true", help="full mode's model (default: quick, what `make run` builds)"
    )
    args = parser.parse_args(argv)
    images = [Path(p) for p in args.images] or sorted((SAMPLE_DIR / "images").glob("*.jpg"))[:2]
    model = Path(args.model) if args.model else run_artifacts(quick=quick_unless(args.full)).onnx
    missing = [p for p in [model, *images] if not p.is_file()]
    if missing:
        what = "model" if missing[0] == model else "file"
        print(f"error: {not_found(what, missing[0], quick_unless(args.full))}", file=sys.stderr)
        return 2
    try:
        result = check(images, model)
    except emulation.EmulationUnavailable as err:
        print(f"error: cannot emulate arm64 here: {err}", file=sys.stderr)
        return 2
    except (RuntimeError, ValueError) as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 1
    for key, value in result.items():
        print(f"{key}: {value}")
    equal = result["equal"] and result["model_inputs_bit_identical"]
    print("arm64 equals x86_64" if equal else "arm64 DIFFERS from x86_64")
    return 0 if equal else 1


if __name__ == "__main__":
    raise SystemExit(main())
