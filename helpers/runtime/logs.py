"""The handler's log: one JSON object per line on stdout, which CloudWatch Logs reads and can query."""

from __future__ import annotations

import json
import logging
import sys

LOGGER_NAME = "helpers.handler"


class JsonFormatter(logging.Formatter):
    """level, message and logger, plus the record's `fields` (pass `extra={"fields": {...}}`)."""

    def format(self, record):
        entry = {"level": record.levelname, "message": record.getMessage(), "logger": record.name}
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class StdoutHandler(logging.Handler):
    """Writes to the *current* sys.stdout, not the one at import (tests capture it; Lambda reads it)."""

    def emit(self, record):
        print(self.format(record), file=sys.stdout, flush=True)


def logger(level: str = "INFO") -> logging.Logger:
    """The handler's logger at `level`; its JSON handler is attached once per process."""
    log = logging.getLogger(LOGGER_NAME)
    if not log.handlers:
        stdout = StdoutHandler()
        stdout.setFormatter(JsonFormatter())
        log.addHandler(stdout)
        log.propagate = False
    log.setLevel(level)
    return log
