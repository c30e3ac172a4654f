"""The Lambda-safe half must never import the dev half (torch, cv2, albumentations, ...)."""

import json
import subprocess
import sys
from pathlib import Path

import helpers.runtime

RUNTIME_DIR = Path(helpers.runtime.__file__).parent
#: Every module of the runtime folder, found on disk so that a new module is covered by itself.
RUNTIME_MODULES = sorted(f"helpers.runtime.{p.stem}" for p in RUNTIME_DIR.glob("*.py") if p.stem != "__init__")
FORBIDDEN = {
    "torch",
    "torchvision",
    "cv2",
    "albumentations",
    "albucore",
    "lightning",
    "matplotlib",
    "onnx",
    "boto3",
    "botocore",
}
ALLOWED_THIRD_PARTY = {"numpy", "PIL", "onnxruntime"}
PROVIDED_BY_THE_LAMBDA_RUNTIME = {"snapshot_restore_py"}  # SnapStart hooks; imported only where present


def test_runtime_import_closure_is_stdlib_numpy_pillow_onnxruntime():
    code = (
        "import sys, json, importlib\n"
        f"for m in {RUNTIME_MODULES!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules})))"
    )
    loaded = set(json.loads(subprocess.check_output([sys.executable, "-c", code], text=True)))
    assert not loaded & FORBIDDEN
    third_party = {m for m in loaded - set(sys.stdlib_module_names) if not m.startswith("_")}
    # onnxruntime's own imports (e.g. its capi) are part of onnxruntime.
    assert third_party - {"helpers"} <= ALLOWED_THIRD_PARTY | PROVIDED_BY_THE_LAMBDA_RUNTIME, third_party


def test_runtime_imports_nothing_of_helpers_outside_its_folder():
    code = (
        "import sys, json, importlib\n"
        f"for m in {RUNTIME_MODULES!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(n for n in sys.modules if n.startswith('helpers'))))"
    )
    loaded = json.loads(subprocess.check_output([sys.executable, "-c", code], text=True))
    assert "helpers.runtime.config" in loaded and "helpers.runtime.handler" in loaded
    assert [m for m in loaded if m not in ("helpers", "helpers.runtime") and not m.startswith("helpers.runtime.")] == []
