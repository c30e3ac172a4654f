"""Try the model: the built zip's handler behind a local Function URL, with a one-page demo at `/`.

    python -m helpers serve [--full] [--zip ZIP] [--model MODEL.onnx] [--web DIR] [--workers N] [--port 8000]

POST any path with the raw image bytes (or the JSON request body) and get what the deployed function
answers: the same statuses and bodies, since each request becomes a Function URL event (payload 2.0,
binary bodies base64-encoded) handled by the zip's own handler under AWS's runtime client. N runtime
clients (default: the CPUs here) long-poll one local Runtime API, as N concurrent execution environments
of one function do, so N requests run at once and more wait their turn. GET /config says which model
serves and its served threshold (the page's slider starts there). The page (page/) is served from the
static build when there is one (`python -m helpers web`, default: the mode's web/ folder): it then also
runs the model in the browser and shows those detections beside the handler's.
"""

from __future__ import annotations

import argparse
import base64
import json
import mimetypes
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from helpers.export.onnx_export import read_contract
from helpers.local.invoke import client_command, lambda_environment, start_clients, stop_clients, unpack
from helpers.local.runtime_api import RuntimeApi, start_runtime_api
from helpers.paths import not_found, quick_unless, run_artifacts, shown
from helpers.runtime.config import MAX_IMAGE_BYTES
from helpers.runtime.contract import served_threshold
from helpers.runtime.cpus import available_cpus

#: The demo page's files; a static build (helpers.web.build) is this folder plus the model, the kernel
#: and ONNX Runtime Web.
PAGE_DIR = Path(__file__).with_name("page")
HANDLER = "helpers.runtime.handler.handler"
#: Function URLs take request bodies up to 6 MB.
MAX_BODY_BYTES = MAX_IMAGE_BYTES
REQUEST_TIMEOUT_S = 120


class ServingRuntimeApi(RuntimeApi):
    """The local Runtime API with events arriving while it runs: `submit` queues one and waits for the
    answer a runtime client posts back."""

    def __init__(self):
        super().__init__([])
        self._waiting: dict[str, threading.Event] = {}

    def record(self, request_id: str, kind: str, body: dict) -> None:
        self.answers[request_id] = (kind, body, time.perf_counter())
        if request_id in self._waiting:
            self._waiting[request_id].set()

    def submit(self, event: dict, timeout: float = REQUEST_TIMEOUT_S) -> tuple[str, dict]:
        """-> ("response" | "error", the handler's answer); TimeoutError when no client answered."""
        request_id, answered = str(uuid.uuid4()), threading.Event()
        self._waiting[request_id] = answered
        self.pending.put((request_id, json.dumps(event).encode()))
        try:
            if not answered.wait(timeout):
                raise TimeoutError(f"no answer within {timeout:.0f} s")
            kind, body, _ = self.answers.pop(request_id)
            return kind, body
        finally:
            self._waiting.pop(request_id, None)
            self.sent_at.pop(request_id, None)


def function_url_event(method: str, target: str, headers: dict[str, str], body: bytes, source_ip: str) -> dict:
    """An HTTP request as a Lambda Function URL event (payload format 2.0): text bodies as text, any
    other body base64-encoded, as AWS does."""
    url = urlsplit(target)
    content_type = headers.get("content-type", "")
    text = content_type.startswith(("application/json", "text/"))
    try:
        encoded, is_base64 = (body.decode("utf-8"), False) if text else (base64.b64encode(body).decode(), True)
    except UnicodeDecodeError:
        encoded, is_base64 = base64.b64encode(body).decode(), True
    event = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": url.path,
        "rawQueryString": url.query,
        "headers": headers,
        "requestContext": {
            "http": {"method": method, "path": url.path, "protocol": "HTTP/1.1", "sourceIp": source_ip},
            "requestId": str(uuid.uuid4()),
            "timeEpoch": int(time.time() * 1000),
        },
        "body": encoded,
        "isBase64Encoded": is_base64,
    }
    if url.query:
        event["queryStringParameters"] = dict(parse_qsl(url.query))
    return event


class _FrontHandler(BaseHTTPRequestHandler):
    server: FrontServer

    def log_message(self, format, *args):  # one line per request on stderr, without the date noise
        print(f"{self.command} {self.path} -> {args[1] if len(args) > 1 else ''}", file=sys.stderr)

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._send(status, json.dumps({"error": message}).encode())

    def do_GET(self):
        path = urlsplit(self.path).path
        if path == "/config":
            return self._send(200, json.dumps(self.server.config).encode())
        folder = self.server.page.resolve()
        file = (folder / (path.lstrip("/") or "index.html")).resolve()
        if file.is_relative_to(folder) and file.is_file():
            return self._send(200, file.read_bytes(), mimetypes.guess_type(file.name)[0] or "application/octet-stream")
        self._error(404, "GET / for the demo page, GET /config, or POST an image")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            return self._error(413, f"request body is {length} bytes; a Function URL takes up to {MAX_BODY_BYTES}")
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        event = function_url_event("POST", self.path, headers, body, self.client_address[0])
        try:
            kind, answer = self.server.api.submit(event)
        except TimeoutError as err:
            return self._error(504, str(err))
        if kind == "error" or not isinstance(answer, dict) or "statusCode" not in answer:
            return self._error(502, f"the function failed: {json.dumps(answer)[:500]}")
        content_type = (answer.get("headers") or {}).get("content-type", "application/json")
        raw = answer.get("body") or ""
        data = base64.b64decode(raw) if answer.get("isBase64Encoded") else raw.encode()
        self._send(int(answer["statusCode"]), data, content_type)


class FrontServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, api: ServingRuntimeApi, config: dict, page: Path = PAGE_DIR):
        super().__init__(("127.0.0.1", port), _FrontHandler)
        self.api, self.config, self.page = api, config, page


class Pool:
    """N runtime clients running the unpacked zip, all asking one ServingRuntimeApi for events."""

    def __init__(self, zip_path: Path, model: Path, workers: int, python: str = "3.12"):
        self._tmp = tempfile.TemporaryDirectory()
        tmp = Path(self._tmp.name)
        command, python = client_command(tmp, HANDLER, "x86_64", python)
        task = unpack(zip_path, tmp)
        self.api = start_runtime_api(ServingRuntimeApi())
        env = {"MODEL_PATH": str(Path(model).resolve()), "LOG_LEVEL": "WARNING", "METRICS_NAMESPACE": ""}
        env = lambda_environment(self.api, python, HANDLER, tmp, False, env)
        self.logs = [open(tmp / f"worker-{i}.log", "wb") for i in range(workers)]  # noqa: SIM115 - closed in stop()
        self.processes = start_clients(command, env, task, self.logs)

    def wait_ready(self, timeout: float = 60) -> None:
        """Until a client has asked for its first event (its init is done), or one failed."""
        deadline = time.monotonic() + timeout
        while self.api.first_next_at is None:
            if self.api.init_error is not None:
                raise RuntimeError(f"the function's init failed: {self.api.init_error.get('errorMessage')}")
            if any(p.poll() is not None for p in self.processes):
                raise RuntimeError("a runtime client exited during its init")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the runtime clients did not start within {timeout:.0f} s")
            time.sleep(0.05)

    def stop(self) -> None:
        stop_clients(self.processes)
        for log in self.logs:
            log.close()
        self.api.shutdown()
        self.api.server_close()
        self._tmp.cleanup()


def served_config(model: Path) -> dict:
    contract = read_contract(model)
    threshold = served_threshold(None, None, contract.score_threshold)
    return {"model": shown(model), "score_threshold": threshold, "classes": list(contract.classes.names)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--zip", type=Path, help="default: the mode's lambda-x86_64.zip")
    parser.add_argument("--model", type=Path, help="default: the shipped model (helpers.export.ship)")
    parser.add_argument(
        "--full", action="store_true", help="full mode's artefacts (default: quick, what `make run` builds)"
    )
    parser.add_argument("--web", type=Path, help="the static build to serve (default: the mode's web/ when built)")
    parser.add_argument("--workers", type=int, default=available_cpus(), help="runtime clients (concurrency)")
    parser.add_argument("--port", type=int, default=8000, help="0: any free port (printed)")
    args = parser.parse_args(argv)
    layout = run_artifacts(quick=quick_unless(args.full))
    args.zip, args.model = args.zip or layout.zip(), args.model or layout.shipped
    page = args.web or (layout.web if (layout.web / "config.json").is_file() else PAGE_DIR)
    for what, path in (("zip", args.zip), ("model", args.model)):
        if not path.is_file():
            print(f"error: {not_found(what, path, quick_unless(args.full))}", file=sys.stderr)
            return 2
    if args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 2
    try:
        config = served_config(args.model)
        pool = Pool(args.zip, args.model, args.workers)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        pool.wait_ready()
        front = FrontServer(args.port, pool.api, config, page)
        print(
            f"serving {shown(args.zip)} with {config['model']} on http://127.0.0.1:{front.server_address[1]}/ "
            f"({args.workers} runtime clients, page {shown(page)}); Ctrl-C stops",
            flush=True,
        )
        front.serve_forever()
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        pool.stop()
    return 0
