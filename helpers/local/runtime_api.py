"""The invocation side of the Lambda Runtime API, served on 127.0.0.1: what AWS's runtime client
(awslambdaric) asks for events and posts answers to. helpers.local.invoke runs a zip against it once;
helpers.local.serve keeps it running behind a local Function URL."""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API_PREFIX = "/2018-06-01/runtime"


class RuntimeApi(ThreadingHTTPServer):
    """The invocation side of the Lambda Runtime API on 127.0.0.1: queued events go out on
    GET /invocation/next; POST /invocation/{id}/response, /invocation/{id}/error and /init/error are
    recorded with the time they arrived. `done` is set once every event has an answer or init failed.
    With SnapStart the client asks GET /restore/next after its before-snapshot hooks; the answer means
    "restored", and POST /restore/error is an init error."""

    daemon_threads = True

    def __init__(self, events: list):
        super().__init__(("127.0.0.1", 0), _RuntimeApiHandler)
        self.pending: queue.Queue = queue.Queue()
        self.request_ids = [str(uuid.uuid4()) for _ in events]
        for request_id, event in zip(self.request_ids, events):
            self.pending.put((request_id, json.dumps(event).encode()))
        self.first_next_at: float | None = None
        self.sent_at: dict[str, float] = {}
        self.answers: dict[str, tuple[str, dict, float]] = {}  # id -> (response|error, body, time)
        self.init_error: dict | None = None
        self.restored = False
        self.user_agent = ""
        self.done = threading.Event()
        if not events:
            self.done.set()

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):  # the client is killed at the end: expected
            super().handle_error(request, client_address)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def record(self, request_id: str, kind: str, body: dict) -> None:
        self.answers[request_id] = (kind, body, time.perf_counter())
        if len(self.answers) == len(self.request_ids):
            self.done.set()


class _RuntimeApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # the client keeps its connection open between events
    server: RuntimeApi

    def log_message(self, *args):  # the invoke's report says what happened; no access log on stderr
        pass

    def _reply(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        api = self.server
        if self.path == f"{API_PREFIX}/restore/next":  # SnapStart: the snapshot is "taken" and restored at once
            api.restored = True
            return self._reply(200)
        if self.path != f"{API_PREFIX}/invocation/next":
            return self._reply(404, b'{"errorMessage": "not part of the local Runtime API"}')
        api.user_agent = self.headers.get("User-Agent", api.user_agent)
        if api.first_next_at is None:
            api.first_next_at = time.perf_counter()
        request_id, body = api.pending.get()  # blocks like Lambda between events; the process is then ended
        api.sent_at[request_id] = time.perf_counter()
        headers = {
            "Lambda-Runtime-Aws-Request-Id": request_id,
            "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 300_000),
            "Lambda-Runtime-Invoked-Function-Arn": "arn:aws:lambda:us-east-1:000000000000:function:local",
            "Lambda-Runtime-Trace-Id": f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Sampled=0",
        }
        self._reply(200, body, headers)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = {"unparsed": raw.decode(errors="replace")}
        parts = self.path.removeprefix(API_PREFIX).strip("/").split("/")
        api = self.server
        if parts in (["init", "error"], ["restore", "error"]):
            api.init_error = body
            api.done.set()
        elif len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
            api.record(parts[1], parts[2], body)
        else:
            return self._reply(404, b'{"errorMessage": "not part of the local Runtime API"}')
        self._reply(202, b'{"status": "OK"}')


def start_runtime_api(api: RuntimeApi) -> RuntimeApi:
    """`api` serving on its own thread until api.shutdown()."""
    threading.Thread(target=api.serve_forever, daemon=True).start()
    return api
