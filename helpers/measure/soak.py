"""Memory soak: many warm handler invocations in one process, RSS printed as it goes.

    python -m helpers soak [--full | --model MODEL.onnx] [--invocations 1000]

A leak (growing caches, unclosed images, logging handlers) shows as steady RSS growth after warm-up.
"""

from __future__ import annotations

import argparse
import base64
import sys
from pathlib import Path

from helpers.paths import SAMPLE_DIR, not_found, quick_unless


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS:")).split()[1]) / 1024


def main(argv=None) -> int:
    from helpers.runtime import handler

    parser = argparse.ArgumentParser(prog="python -m helpers soak", description=__doc__)
    parser.add_argument("--model", type=Path, help="ONNX model (default: the mode's model.onnx, made if missing)")
    parser.add_argument(
        "--full", action="store_true", help="full mode's model (default: quick, what `make run` builds)"
    )
    parser.add_argument("--invocations", type=int, default=1000)
    args = parser.parse_args(argv)
    if args.model is None:  # only then pay for the dev side (torch) in this process
        from helpers.pipeline.steps import Series

        args.model = Series.from_parameters(quick=quick_unless(args.full)).ensure_onnx()
    model = args.model
    if not model.is_file():
        print(f"error: {not_found('model', model, quick_unless(args.full))}", file=sys.stderr)
        return 2
    handler.init({"MODEL_PATH": str(model), "LOG_LEVEL": "ERROR"})
    images = [base64.b64encode(p.read_bytes()).decode() for p in sorted((SAMPLE_DIR / "images").glob("*.jpg"))]
    events = [{"image": image} for image in images] + [{"image": "not base64"}, {"s3_uri": "bad"}]
    warm_up = 20
    for i in range(warm_up):
        handler.handler(events[i % len(events)], None)
    start = rss_mb()
    print(f"after {warm_up} warm-up invocations: RSS {start:.1f} MB")
    for i in range(1, args.invocations + 1):
        handler.handler(events[i % len(events)], None)
        if i % max(1, args.invocations // 10) == 0:
            print(f"{i:6d} invocations: RSS {rss_mb():.1f} MB ({rss_mb() - start:+.1f} MB)", flush=True)
    growth = rss_mb() - start
    print(f"RSS growth over {args.invocations} warm invocations: {growth:+.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
