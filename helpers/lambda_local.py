"""Run a built Lambda zip the way the managed runtime would, without Docker.

The zip is unzipped into a temporary folder and imported by a separate, isolated CPython 3.12
(`-I -S`: no site-packages, no user paths, no PYTHON* variables), whose sys.path is the stdlib plus
that folder only; so a missing or over-trimmed file fails here as it would in AWS. The driver
resolves the handler string like the runtime ("module.function"), reports cold init (imports of
numpy/Pillow/onnxruntime, then handler import + init) and the latency of every event.

    python -m helpers.lambda_local dist/lambda-x86_64.zip data/fridge-sample/images/10.jpg
"""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from helpers.package import find_python

DRIVER = r"""
import importlib, json, sys, time
package_dir, handler_name, events_path, results_path = sys.argv[1:5]
sys.path = [package_dir] + [p for p in sys.path if p.startswith(sys.base_prefix)]
t0 = time.perf_counter()
import numpy, PIL.Image, onnxruntime  # what the handler needs, timed on their own
t1 = time.perf_counter()
module_name, function_name = handler_name.rsplit(".", 1)
handler = getattr(importlib.import_module(module_name), function_name)
t2 = time.perf_counter()

def peak_rss_mb():
    # VmHWM belongs to this process image; ru_maxrss would carry over the parent's peak across exec.
    with open("/proc/self/status") as status:
        line = next(l for l in status if l.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024

class Context:
    aws_request_id = "local-invoke"
    function_name = "local"
    memory_limit_in_mb = 2048
    def get_remaining_time_in_millis(self):
        return 30000

with open(events_path) as f:
    events = json.load(f)
responses, latencies = [], []
for event in events:
    start = time.perf_counter()
    responses.append(handler(event, Context()))
    latencies.append((time.perf_counter() - start) * 1e3)
outside = [m for m in ("torch", "cv2", "albumentations") if m in sys.modules]
with open(results_path, "w") as f:
    json.dump({
        "python": sys.version.split()[0],
        "import_libraries_ms": (t1 - t0) * 1e3,
        "import_handler_and_init_ms": (t2 - t1) * 1e3,
        "cold_init_ms": (t2 - t0) * 1e3,
        "latencies_ms": latencies,
        "responses": responses,
        "peak_rss_mb": peak_rss_mb(),
        "numpy_file": numpy.__file__,
        "forbidden_modules_loaded": outside,
    }, f)
"""


def invoke_zip(
    zip_path: str | Path,
    events: list,
    env: dict[str, str],
    handler: str = "helpers.runtime.handler.handler",
    python: str = "3.12",
    timeout: float = 300,
) -> dict:
    """Unzip, run `events` through `handler` in an isolated interpreter; returns the driver report."""
    interpreter = find_python(python)
    if interpreter is None:
        raise FileNotFoundError(f"no python{python} interpreter (PATH or pyenv) for the local invoke")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        package = tmp / "task"  # like /var/task
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(package)
        for path in package.rglob("*.so*"):  # zipfile drops the mode bits
            path.chmod(0o755)
        (tmp / "driver.py").write_text(DRIVER)
        (tmp / "events.json").write_text(json.dumps(events))
        lambda_env = {
            "AWS_LAMBDA_FUNCTION_NAME": "local",  # makes the handler do its init at import, as in AWS
            "LAMBDA_TASK_ROOT": str(package),
            "MODEL_CACHE_DIR": str(tmp / "tmp"),
            "LANG": "C.UTF-8",
            **env,
        }
        completed = subprocess.run(
            [
                str(interpreter),
                "-I",
                "-S",
                str(tmp / "driver.py"),
                str(package),
                handler,
                str(tmp / "events.json"),
                str(tmp / "results.json"),
            ],
            env=lambda_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=package,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"local invoke failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
        report = json.loads((tmp / "results.json").read_text())
        report["stdout"] = completed.stdout
        return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Invoke a built Lambda zip locally on images.")
    parser.add_argument("zip")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--model-path", default="model/model.onnx", help="MODEL_PATH inside the zip")
    parser.add_argument("--repeat", type=int, default=1, help="send each image this many times")
    args = parser.parse_args(argv)
    missing = [p for p in [args.zip, *args.images] if not Path(p).is_file()]
    if missing:
        print(f"error: file not found: {missing[0]}", file=sys.stderr)
        return 2
    events = [{"image": base64.b64encode(Path(p).read_bytes()).decode()} for p in args.images] * args.repeat
    try:
        report = invoke_zip(args.zip, events, {"MODEL_PATH": args.model_path})
    except (FileNotFoundError, RuntimeError, zipfile.BadZipFile) as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    del report["stdout"]
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
