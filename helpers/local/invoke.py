"""Run a built Lambda zip under AWS's own runtime interface client, locally and without Docker.

Lambda's python3.12 runtime is a client (awslambdaric) that imports the handler and then asks the
Lambda Runtime API for events over HTTP, posting back each response or error. Here the same client,
pinned and installed for the target Python and architecture into a cache (as /var/runtime), runs the
unzipped package (as /var/task) in an isolated interpreter (`-I -S`: the stdlib plus those two
folders only), and `RuntimeApi` (helpers.local.runtime_api) serves the invocation side of the Runtime
API on 127.0.0.1. So handler resolution, event and response (de)serialisation, init errors and error
shapes are the runtime's own, and a missing or over-trimmed file fails here as it would in AWS.

    python -m helpers invoke [ZIP] data/fridge-sample/images/10.jpg   (ZIP: the mode's x86_64 zip; --full)

With arch="arm64" the interpreter is Debian's aarch64 CPython under qemu-user (helpers.local.emulation;
the comparison with x86_64: helpers.local.arm64).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import BinaryIO, NamedTuple

from helpers.build.interpreters import find_python, pip_install
from helpers.local.emulation import emulated_arm64_command
from helpers.local.runtime_api import RuntimeApi, start_runtime_api
from helpers.paths import ARTIFACTS_ROOT, not_found, quick_unless, run_artifacts

#: The runtime interface client of Lambda's managed Python runtimes, and its dependencies, pinned; then
#: boto3, which the managed runtime provides and the zip does not ship (this project's pinned version).
RUNTIME_CLIENT = ("awslambdaric==4.2.2", "simplejson==4.3.0", "snapshot-restore-py==1.0.0", "boto3==1.44.8")
RUNTIME_CLIENT_CACHE = ARTIFACTS_ROOT / "cache" / "runtime-client"

#: Started by the isolated interpreter: /var/task first, then /var/runtime, then the stdlib — the
#: order of sys.path in Lambda — and awslambdaric's own entry point with the handler string.
BOOTSTRAP = r"""
import sys
task, runtime, handler = sys.argv[1:4]
sys.path[:0] = [task, runtime]
from awslambdaric.__main__ import main
main([sys.argv[0], handler])
"""


def runtime_client_dir(arch: str = "x86_64", python: str = "3.12") -> Path:
    """awslambdaric for `arch`/CPython `python`, installed once into the artefacts cache."""
    pins = hashlib.sha256(" ".join(RUNTIME_CLIENT).encode()).hexdigest()[:8]
    target = RUNTIME_CLIENT_CACHE / f"{RUNTIME_CLIENT[0].replace('==', '-')}-{pins}-{arch}-cp{python.replace('.', '')}"
    if not (target / "awslambdaric").is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as staging:  # complete or absent, never half
            pip_install(Path(staging) / "runtime", arch, python, RUNTIME_CLIENT)
            (Path(staging) / "runtime").rename(target)
    return target


def _process_memory(pid: int) -> tuple[float | None, list[str]]:
    """Peak resident MB (VmHWM) and the shared objects mapped by a live process."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return None, []
    peak = next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:")), None)
    libraries = {line.split()[-1] for line in maps.splitlines() if ".so" in line.rsplit("/", 1)[-1]}
    return peak, sorted(libraries)


def _metric(stdout: str, name: str) -> float | None:
    """The first value of an Embedded Metric Format metric the handler logged."""
    for line in stdout.splitlines():
        if line.startswith("{") and '"_aws"' in line and f'"{name}"' in line:
            return json.loads(line)[name]
    return None


class _ClientRun(NamedTuple):
    """What one run of the runtime client left: its start, exit code, memory and log."""

    started: float  # time.perf_counter() just before the interpreter was started
    returncode: int
    peak_rss_mb: float | None
    libraries: list[str]
    stdout: str


def interpreter_command(arch: str, python: str) -> tuple[list[str], str]:
    """The command that starts CPython for `arch`, and its version (arm64: Debian's, under qemu-user)."""
    if arch == "arm64":
        return emulated_arm64_command()
    interpreter = find_python(python)
    if interpreter is None:
        raise FileNotFoundError(f"no python{python} interpreter (PATH or pyenv) for the local invoke")
    return [str(interpreter)], python


def unpack(zip_path: str | Path, tmp: Path) -> Path:
    """The package unzipped into tmp/task (like /var/task), beside an empty tmp/tmp (like /tmp)."""
    task = tmp / "task"
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(task)
    for path in task.rglob("*.so*"):  # zipfile drops the mode bits
        path.chmod(0o755)
    (tmp / "tmp").mkdir()
    return task


def client_command(tmp: Path, handler: str, arch: str = "x86_64", python: str = "3.12") -> tuple[list[str], str]:
    """The command that starts the runtime client on the package unpacked into tmp/task (see unpack),
    and the CPython version it runs: the interpreter for `arch` in isolated mode, the client's cache."""
    command, python = interpreter_command(arch, python)
    runtime = runtime_client_dir(arch, python)
    return [*command, "-I", "-S", "-c", BOOTSTRAP, str(tmp / "task"), str(runtime), handler], python


def start_clients(command: list[str], env: dict[str, str], task: Path, logs: list[BinaryIO]) -> list[subprocess.Popen]:
    """One runtime client per log file, each in its own process group (stop_clients ends the group), as
    concurrent execution environments of one function."""
    return [
        subprocess.Popen(command, env=env, cwd=task, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        for log in logs
    ]


def stop_clients(processes: list[subprocess.Popen]) -> None:
    """Kill each client's process group, as Lambda ends an environment, and reap it."""
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def lambda_environment(
    api: RuntimeApi, python: str, handler: str, tmp: Path, snapstart: bool, env: dict[str, str]
) -> dict[str, str]:
    """The variables Lambda's runtime sets, then `env` (the function's own configuration)."""
    return {
        "AWS_LAMBDA_RUNTIME_API": api.address,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_python{python}",
        "AWS_LAMBDA_FUNCTION_NAME": "local",  # makes the handler do its init at import, as in AWS
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "2048",
        "AWS_REGION": "us-east-1",
        "_HANDLER": handler,
        "LAMBDA_TASK_ROOT": str(tmp / "task"),
        "MODEL_CACHE_DIR": str(tmp / "tmp"),
        "LANG": "C.UTF-8",
        "TZ": ":UTC",
        **({"AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start"} if snapstart else {}),
        **env,
    }


def _run_client(command: list[str], env: dict[str, str], task: Path, api: RuntimeApi, timeout: float) -> _ClientRun:
    """The client in its own process group until every event has an answer, init failed or it exited;
    its memory is read while it is still alive, then the group is killed, as Lambda ends an environment."""
    log_path = task.parent / "log.txt"
    with open(log_path, "wb") as log:
        started = time.perf_counter()
        (process,) = start_clients(command, env, task, [log])
        try:
            deadline = time.monotonic() + timeout
            while not api.done.wait(0.05) and process.poll() is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"local invoke timed out after {timeout:.0f} s")
            api.done.wait(1)  # an init error is posted just before the client exits
            peak_rss_mb, libraries = _process_memory(process.pid)
        finally:
            stop_clients([process])
    return _ClientRun(started, process.returncode, peak_rss_mb, libraries, log_path.read_text(errors="replace"))


def _report(api: RuntimeApi, run: _ClientRun, task: Path) -> dict:
    """invoke_zip's report from what the Runtime API recorded and what the client logged."""
    if not api.done.is_set():
        raise RuntimeError(f"the runtime client exited ({run.returncode}) before answering:\n{run.stdout[-3000:]}")
    user_agent = api.user_agent.split("/", 1)[-1]  # aws-lambda-python/<python>-<client version>
    answers = [api.answers.get(request_id) for request_id in api.request_ids]
    return {
        "python": user_agent.split("-")[0],
        "runtime_client": api.user_agent,
        "init_error": api.init_error,
        "request_ids": api.request_ids,
        "restored_from_snapshot": api.restored,
        "cold_init_ms": (api.first_next_at - run.started) * 1e3 if api.first_next_at else None,
        "handler_init_ms": _metric(run.stdout, "InitMs"),
        "responses": [answer[1] for answer in answers if answer],
        "failed": [i for i, answer in enumerate(answers) if answer and answer[0] == "error"],
        "latencies_ms": [
            (answer[2] - api.sent_at[request_id]) * 1e3
            for request_id, answer in zip(api.request_ids, answers)
            if answer
        ],
        "peak_rss_mb": run.peak_rss_mb,
        "libraries_from_package": [str(Path(p).relative_to(task)) for p in run.libraries if p.startswith(f"{task}/")],
        "libraries_from_dev_environment": [p for p in run.libraries if p.startswith(f"{Path(sys.prefix)}/")],
        "libraries": run.libraries,
        "stdout": run.stdout,
    }


def invoke_zip(
    zip_path: str | Path,
    events: list,
    env: dict[str, str],
    handler: str = "helpers.runtime.handler.handler",
    python: str = "3.12",
    arch: str = "x86_64",
    timeout: float = 300,
    snapstart: bool = False,
) -> dict:
    """Unzip, run `events` through `handler` under the runtime client; returns a report: the
    responses (an error body where the handler raised), latencies as the Runtime API saw them, the cold
    init (start to the first request for an event, what Lambda reports as Init Duration), the handler's
    own init (its InitMs metric), peak RSS, the shared objects it mapped (those from the package and
    any from this development environment, which must be none), the log output, and any init error.
    `snapstart` runs the init as SnapStart does: hooks before the snapshot, a restore, hooks after it."""
    with tempfile.TemporaryDirectory() as tmp:
        command, python = client_command(Path(tmp), handler, arch, python)
        task = unpack(zip_path, Path(tmp))
        api = start_runtime_api(RuntimeApi(events))
        try:
            run = _run_client(
                command,
                lambda_environment(api, python, handler, Path(tmp), snapstart, env),
                task,
                api,
                timeout,
            )
        finally:
            api.shutdown()
            api.server_close()
        return _report(api, run, task)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m helpers invoke", description="Invoke a built Lambda zip locally on images, under awslambdaric."
    )
    parser.add_argument("files", nargs="+", metavar="[ZIP] IMAGE", help="ZIP (a .zip) default: the mode's x86_64 zip")
    parser.add_argument("--full", action="store_true", help="full mode's zip (default: quick, what `make run` builds)")
    parser.add_argument("--model-path", default="model/model.onnx", help="MODEL_PATH inside the zip")
    parser.add_argument("--repeat", type=int, default=1, help="send each image this many times")
    parser.add_argument("--arch", choices=("x86_64", "arm64"), default="x86_64", help="arm64 runs under qemu-user")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    given_zip = args.files[0].endswith(".zip")
    zip_path = Path(args.files[0]) if given_zip else run_artifacts(quick=quick_unless(args.full)).zip(args.arch)
    images = args.files[1:] if given_zip else args.files
    if not images:
        parser.error("no IMAGE given")
    if missing := [p for p in [zip_path, *images] if not Path(p).is_file()]:
        print(f"error: {not_found('file', missing[0], quick_unless(args.full))}", file=sys.stderr)
        return 2
    events = [{"image": base64.b64encode(Path(p).read_bytes()).decode()} for p in images] * args.repeat
    try:
        report = invoke_zip(zip_path, events, {"MODEL_PATH": args.model_path}, arch=args.arch)
    except (FileNotFoundError, RuntimeError, ValueError, zipfile.BadZipFile) as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    if report["init_error"]:
        error = report["init_error"]
        print(f"error: init failed: {error.get('errorType')}: {error.get('errorMessage')}", file=sys.stderr)
        return 1
    for key in ("stdout", "libraries", "libraries_from_package"):
        del report[key]
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
