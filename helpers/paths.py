"""Where everything lives: the project's folders and one run's artefact layout, from one root.

    artifacts/<mode>/              mode: quick (the default) or full (HELPERS_QUICK=0); HELPERS_ARTIFACTS overrides
        train/                     best.ckpt, summary.json, split.json, class_map.json, synthetic/, logs/
        model.onnx, model_int8.onnx, shipped.json (which of the two ships, and why)
        dist/lambda-<arch>.zip     (+ lambda-<arch>.json, the size report)
        notebooks/, deployment.json
    artifacts/data/                downloaded datasets, one folder per address (both modes)
    artifacts/benchmark/, artifacts/accuracy/, artifacts/icevision/<mode>/

Training, the pipeline, the notebooks and the CLIs (export, package, deploy) all take their default
paths from here, so what one step writes is where the next one looks.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "data"
SAMPLE_DIR = DATA_DIR / "fridge-sample"
THUMBNAILS_DIR = DATA_DIR / "fridge-classification-small150"
TEMPLATE = PROJECT_ROOT / "cloudformation" / "template.yaml"
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"

ARTIFACTS_ROOT = PROJECT_ROOT / "artifacts"
DATA_CACHE_DIR = ARTIFACTS_ROOT / "data"
BENCHMARK_DIR = ARTIFACTS_ROOT / "benchmark"
ACCURACY_DIR = ARTIFACTS_ROOT / "accuracy"
ICEVISION_DIR = ARTIFACTS_ROOT / "icevision"

QUICK_VARIABLE = "HELPERS_QUICK"
ARTIFACTS_VARIABLE = "HELPERS_ARTIFACTS"


def quick_mode() -> bool:
    """Quick (the minutes-long configuration `make run`, CI and the notebooks use) unless HELPERS_QUICK
    is "0", "false", "False" or empty: one default mode, so every command finds what `make run` built."""
    return os.environ.get(QUICK_VARIABLE, "1") not in ("", "0", "false", "False")


@dataclasses.dataclass(frozen=True)
class RunArtifacts:
    """One run's files under one root folder."""

    root: Path

    @property
    def train_dir(self) -> Path:
        return self.root / "train"

    @property
    def checkpoint(self) -> Path:
        return self.train_dir / "best.ckpt"

    @property
    def summary(self) -> Path:
        return self.train_dir / "summary.json"

    @property
    def split(self) -> Path:
        return split_file(self.train_dir)

    @property
    def onnx(self) -> Path:
        return self.root / "model.onnx"

    @property
    def int8(self) -> Path:
        return self.root / "model_int8.onnx"

    @property
    def ship_decision(self) -> Path:
        """Which of model.onnx and model_int8.onnx ships, and why (helpers.export.ship)."""
        return self.root / "shipped.json"

    @property
    def shipped(self) -> Path:
        """The model the zip, deploy, serve and batch serve: the one ship_decision names, else model.onnx."""
        if self.ship_decision.is_file():
            return self.root / json.loads(self.ship_decision.read_text())["model"]
        return self.onnx

    @property
    def dist_dir(self) -> Path:
        return self.root / "dist"

    def zip(self, arch: str = "x86_64") -> Path:
        return self.dist_dir / f"lambda-{arch}.zip"

    def zip_report(self, arch: str = "x86_64") -> Path:
        return self.dist_dir / f"lambda-{arch}.json"

    @property
    def web(self) -> Path:
        """The static folder that runs the shipped model in the browser (helpers.web.build)."""
        return self.root / "web"

    @property
    def notebooks_dir(self) -> Path:
        return self.root / "notebooks"

    @property
    def deployment(self) -> Path:
        return self.root / "deployment.json"


def run_artifacts(quick: bool | None = None) -> RunArtifacts:
    """HELPERS_ARTIFACTS if set, else artifacts/quick or artifacts/full (quick: HELPERS_QUICK unless
    given). Nothing is created here; each step creates what it writes."""
    if os.environ.get(ARTIFACTS_VARIABLE):
        return RunArtifacts(Path(os.environ[ARTIFACTS_VARIABLE]))
    quick = quick_mode() if quick is None else quick
    return RunArtifacts(ARTIFACTS_ROOT / ("quick" if quick else "full"))


def quick_unless(full: bool) -> bool:
    """A CLI's mode: `--full` selects full; without it the default (quick unless HELPERS_QUICK=0)."""
    return False if full else quick_mode()


def build_command(quick: bool | None = None) -> str:
    """The command that builds a mode's run (checkpoint, model.onnx, model_int8.onnx, the x86_64 zip)
    where run_artifacts says: the one a message about a missing artefact names."""
    quick = quick_mode() if quick is None else quick
    return "python -m helpers run-all" + ("" if quick else " --full")


def not_found(what: str, path: str | Path, quick: bool | None = None) -> str:
    """What a CLI says (after "error: ") when `path` is absent; when it is one of the files run-all builds
    for a mode (`quick`'s first, default: the environment's), the line names that command."""
    first = quick_mode() if quick is None else quick
    for mode in (first, not first):
        layout = run_artifacts(mode)
        built = (layout.checkpoint, layout.summary, layout.split, layout.onnx, layout.int8, layout.zip())
        if Path(path).absolute() in {p.absolute() for p in (*built, layout.zip_report())}:
            return f"{what} not found: {shown(path)} ({build_command(mode)} builds it)"
    return f"{what} not found: {shown(path)}"


def split_file(train_dir: str | Path) -> Path:
    """Training writes the file names of its split here, next to its checkpoint."""
    return Path(train_dir) / "split.json"


def shown(path: str | Path) -> str:
    """A path as printed to people and stored in records: relative to the project when inside it,
    so that outputs carry no machine's checkout path."""
    path = Path(path)
    return (
        str(path.relative_to(PROJECT_ROOT)) if path.is_absolute() and path.is_relative_to(PROJECT_ROOT) else str(path)
    )
