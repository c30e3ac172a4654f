"""The Lambda-safe half must never import the dev half (torch, cv2, albumentations, ...)."""

import json
import subprocess
import sys

RUNTIME_MODULES = [
    "helpers.config",
    "helpers.runtime.checksum",
    "helpers.runtime.classmap",
    "helpers.runtime.preprocess",
    "helpers.runtime.postprocess",
    "helpers.runtime.model",
    "helpers.runtime.handler",
]
FORBIDDEN = {"torch", "torchvision", "cv2", "albumentations", "albucore", "lightning", "matplotlib",
             "onnx", "boto3", "botocore"}
ALLOWED_THIRD_PARTY = {"numpy", "PIL", "onnxruntime"}


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
    assert third_party - {"helpers"} <= ALLOWED_THIRD_PARTY, third_party
