"""What an artefact was made from, so that it is reused only when nothing that shaped it changed:
digests of the source files of a stage, compared file by file to say which changed."""

from __future__ import annotations

import hashlib
import json

from helpers.paths import PROJECT_ROOT

#: The code that shapes a trained checkpoint, and an exported model (each: folders or files).
TRAINING_CODE = (
    "helpers/data",
    "helpers/train",
    "helpers/runtime/config.py",
    "helpers/runtime/decode.py",  # training decodes with the handler's decoder
    "helpers/runtime/pillow_view.py",
    "helpers/runtime/geometry.py",  # the JPEG DCT scaling follows the letterbox's size
)
EXPORT_CODE = (
    "helpers/export/onnx_export.py",
    "helpers/export/serving_graph.py",
    "helpers/export/quantize.py",
    "helpers/runtime/contract.py",
)


def code_digests(parts: tuple[str, ...]) -> dict[str, str]:
    """{file relative to the project: 12 hex digits of its sha256} for every .py file in `parts`."""
    digests = {}
    for part in parts:
        root = PROJECT_ROOT / part
        for path in sorted([root] if root.is_file() else root.rglob("*.py")):
            digests[path.relative_to(PROJECT_ROOT).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return digests


def digest(digests: dict[str, str]) -> str:
    """One 12-digit digest for a set of file digests."""
    return hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()[:12]


def changed_files(before: dict[str, str] | None, now: dict[str, str]) -> list[str]:
    """Files added, removed or edited between two `code_digests` (all of `now` when `before` is unknown)."""
    if before is None:
        return sorted(now)
    return sorted(name for name in before.keys() | now.keys() if before.get(name) != now.get(name))
