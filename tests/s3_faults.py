"""A local HTTP server speaking just enough S3 (HEAD and GET of path-style objects) to misbehave on
purpose, so that the handler's own botocore client (its timeouts, retries and error parsing) meets each
fault over real HTTP. Used by tests/test_model_fetch.py and tests/test_handler_faults.py through the
`faulty_s3` fixture (tests/conftest.py)."""

from __future__ import annotations

import collections
import contextlib
import http.server
import socket
import time

#: The model's path (bucket "models"), served by default.
KEY = "/models/fridge/model.onnx"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "eu-central-1"}


class FaultyS3(http.server.ThreadingHTTPServer):
    """`objects` maps a path (/bucket/key) to its bytes; a missing one is 404 NoSuchKey. `fault` decides
        how every request answers: None (healthy), "truncate" (half the bytes under the full Content-Length,
        then the connection closes), "corrupt" (as many other bytes), "stall" (the headers and 1 KiB, then
        nothing for 3 s), "deny" (403 AccessDenied), "huge" (HEAD announces a petabyte), "grown" (HEAD announces
    one byte more than GET sends, as when the object is replaced between them), "codeless" (HEAD healthy,
    GET a 400 whose <Error> has no <Code>, as some S3-compatible stores answer), or (status, code)
        (that S3 error). The first `fail_first` requests answer 503 SlowDown whatever the fault.
        `requests` counts the requests by method."""

    daemon_threads = True

    def __init__(self, objects: dict[str, bytes]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.objects, self.fault, self.fail_first = dict(objects), None, 0
        self.requests: collections.Counter = collections.Counter()

    @property
    def gets(self) -> int:
        return self.requests["GET"]


def _error(handler: http.server.BaseHTTPRequestHandler, status: int, code: str, send_body: bool) -> None:
    body = (
        f"<Error><Code>{code}</Code><Message>{code}</Message></Error>"
        if code
        else "<Error><Message>refused</Message></Error>"
    ).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/xml")
    handler.send_header("Content-Length", str(len(body) if send_body else 0))
    handler.end_headers()
    if send_body:
        handler.wfile.write(body)


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def do_HEAD(self):
        self.server.requests["HEAD"] += 1
        self._answer(send_body=False)

    def do_GET(self):
        self.server.requests["GET"] += 1
        self._answer(send_body=True)

    def _answer(self, send_body: bool):
        server, fault = self.server, self.server.fault
        if server.fail_first > 0:
            server.fail_first -= 1
            return _error(self, 503, "SlowDown", send_body)
        path = self.path.split("?")[0]
        if path not in server.objects:
            return _error(self, 404, "NoSuchKey", send_body)
        if fault == "deny":
            return _error(self, 403, "AccessDenied", send_body)
        if isinstance(fault, tuple):
            return _error(self, *fault, send_body)
        if fault == "codeless" and send_body:
            return _error(self, 400, None, send_body)
        body = server.objects[path]
        body = bytes(255 - b for b in body) if fault == "corrupt" else body
        self.send_response(200)
        announced = {"huge": 10**15, "grown": len(body) + 1}.get(fault, len(body)) if not send_body else len(body)
        self.send_header("Content-Length", str(announced))
        self.send_header("ETag", '"0123456789abcdef0123456789abcdef"')
        self.send_header("Content-Type", "binary/octet-stream")
        self.end_headers()
        if not send_body:
            return
        if fault == "truncate":
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
        elif fault == "stall":
            self.wfile.write(body[:1024])
            self.wfile.flush()
            time.sleep(3)
        else:
            self.wfile.write(body)


@contextlib.contextmanager
def unanswered_endpoint():
    """The URL of a port that never completes a TCP handshake: a listening socket whose accept queue is
    already full (backlog 0, connections never accepted), so further SYNs are dropped and a client's
    connect times out."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        fillers = [socket.socket() for _ in range(3)]  # Linux completes backlog + 1; later SYNs are dropped
        try:
            for filler in fillers:
                filler.setblocking(False)
                filler.connect_ex(listener.getsockname())
            yield f"http://127.0.0.1:{listener.getsockname()[1]}"
        finally:
            for filler in fillers:
                filler.close()
