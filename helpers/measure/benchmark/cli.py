"""Benchmarks, measured side by side in one run; `python -m helpers benchmark` writes BENCHMARKS.md.

Ratios are taken between measurements made in the same process, interleaved, on the same inputs, so a
noisy host moves both sides. Nothing here is a test: it prints figures and states the goals.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from helpers.measure.benchmark.measure import BenchmarkRefused, preflight, run
from helpers.measure.benchmark.report import README_SECTION, plot, write_markdown, write_readme
from helpers.paths import BENCHMARK_DIR, PROJECT_ROOT, not_found, quick_unless, run_artifacts


def default_checkpoints(quick: bool) -> list[Path]:
    """The mode's checkpoint when there is one (quick: what `make run` trained), else none."""
    checkpoint = run_artifacts(quick).checkpoint
    return [checkpoint] if checkpoint.is_file() else []


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers benchmark", description=__doc__)
    parser.add_argument(
        "--checkpoints",
        type=Path,
        nargs="*",
        default=None,
        help="trained checkpoints (one per model) for INT8 accuracy and serving figures; default: the "
        "mode's (quick, or --full); models without one run with random weights",
    )
    parser.add_argument(
        "--full", action="store_true", help="full mode's checkpoint (default: quick, what `make run` trains)"
    )
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "BENCHMARKS.md")
    parser.add_argument(
        "--readme", type=Path, default=PROJECT_ROOT / "README.md", help="its serving table is rewritten"
    )
    args = parser.parse_args(argv)
    quick = quick_unless(args.full)
    checkpoints = default_checkpoints(quick) if args.checkpoints is None else args.checkpoints
    if missing := [c for c in checkpoints if not c.is_file()]:
        print(f"error: {not_found('checkpoint', missing[0], quick)}", file=sys.stderr)
        return 2
    if not checkpoints:
        absent = not_found("checkpoint", run_artifacts(quick).checkpoint, quick)
        print(f"note: {absent}: every model runs with random weights", file=sys.stderr)
    skipped = preflight()
    for what, why in skipped.items():
        print(f"skipping the {what}: {why}", file=sys.stderr)
    try:
        results = run(BENCHMARK_DIR, checkpoints, args.repeats, skipped)
    except BenchmarkRefused as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    (BENCHMARK_DIR / "results.json").write_text(json.dumps(results.to_json(), indent=2, default=float))
    plot_path = args.out.parent / "benchmarks.png"
    plot(results, plot_path)
    write_markdown(results, args.out, plot_path)
    print(args.out.read_text())
    if write_readme(results, args.readme):
        print(f"wrote the serving table into {args.readme.name}")
    else:
        print(f"{args.readme.name} has no <!-- {README_SECTION}:start/end --> markers: left as it is")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
