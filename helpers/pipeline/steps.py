"""The series' steps, each made only if missing or stale (layout: helpers.paths).

A `Series` holds what a learner may change — the values of notebook 01's `parameters` cell, or, for
notebooks 02-05, the settings of the run their artefacts folder holds (`Series.trained_in`) — and
makes each artefact from them: the trained checkpoint, model.onnx, model_int8.onnx, the Lambda zip.
Every artefact is keyed by the training configuration's fingerprint (TrainConfig.fingerprint): a run
is reused only when its fingerprint matches, and says so; an export of another run is made again.
So any notebook runs on its own (it builds what earlier ones would have), `python -m helpers run-all`
reuses what exists, and a changed parameter never silently reuses a stale artefact.

The module-level functions are the Series of the environment (HELPERS_QUICK, HELPERS_MODEL,
HELPERS_ARTIFACTS): what CI, the tests and the CLIs use.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import json
import os
from pathlib import Path

from helpers.data.dataset import DATASET_CHOICES, Split
from helpers.paths import PROJECT_ROOT, RunArtifacts, quick_mode, run_artifacts, shown
from helpers.provenance import EXPORT_CODE, TRAINING_CODE, changed_files, code_digests
from helpers.train.config import NOT_FINGERPRINTED, TrainConfig
from helpers.train.summary import RunSummary

#: (artefacts folder, fingerprint) pairs whose reuse was already announced in this process.
_ANNOUNCED: set[tuple[str, str]] = set()
#: The training images the served INT8 model is calibrated on, spread over all of them: as accurate as
#: all of them, in a fraction of the time (docs/decisions.md).
SERVED_CALIBRATION_IMAGES = 16
#: What a training run costs on 2 CPUs, said before one starts.
TRAINING_TIME = {True: "about 2 minutes (quick mode)", False: "about 9 minutes offline (full mode)"}


#: Artefacts folders whose lock this process holds, with how deep (the steps call one another).
_HELD: dict[str, int] = {}


@contextlib.contextmanager
def artefacts_lock(root: Path):
    """One maker at a time per artefacts folder, across processes (two test workers, `make run` beside
    a notebook): the others wait, then reuse what it made instead of writing the same files at once.
    Re-entrant within a process."""
    key = str(root)
    if _HELD.get(key):
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        _HELD[key] = 1
        try:
            yield
        finally:
            _HELD[key] = 0
            fcntl.flock(handle, fcntl.LOCK_UN)


def _locked(step):
    """A Series step run under its artefacts folder's lock."""

    @functools.wraps(step)
    def locked_step(self, *args, **kwargs):
        with artefacts_lock(self.layout().root):
            return step(self, *args, **kwargs)

    return locked_step


def _from_project_root(path: str | Path) -> str:
    """A relative path as the user meant it: one that exists from here (a notebook's kernel runs in
    notebooks/), else from the project root, where `make run` and the CLIs run; absolute: unchanged."""
    path = Path(path)
    if path.is_absolute():
        return str(path)
    return str(path.resolve() if path.exists() else PROJECT_ROOT / path)


@dataclasses.dataclass(frozen=True)
class Series:
    """None means "the mode's default" (TrainConfig and TrainConfig.quick)."""

    quick: bool
    model: str | None = None
    dataset: str | None = None
    epochs: int | None = None
    lr: float | None = None
    image_size: int | None = None
    artifacts: str | Path | None = None  # None: artifacts/quick or artifacts/full (or HELPERS_ARTIFACTS)
    recorded: tuple[tuple[str, object], ...] | None = None  # a run's whole configuration (trained_in)

    @classmethod
    def from_environment(cls) -> Series:
        return cls(quick=quick_mode(), model=os.environ.get("HELPERS_MODEL") or None)

    @classmethod
    def from_parameters(
        cls, quick=None, model=None, dataset=None, epochs=None, lr=None, image_size=None, artifacts=None
    ) -> Series:
        """A notebook's parameters cell: None takes the environment's default (HELPERS_QUICK,
        HELPERS_MODEL, HELPERS_ARTIFACTS), so CI and `make run` set them without editing a notebook.
        Without HELPERS_QUICK a notebook runs quick, the mode its committed outputs come from."""
        default = cls.from_environment()
        return cls(
            default.quick if quick is None else bool(quick),
            model or default.model,
            _from_project_root(dataset) if dataset not in (None, *DATASET_CHOICES) else dataset,
            epochs,
            lr,
            image_size,
            _from_project_root(artifacts) if artifacts else None,
        )

    @classmethod
    def trained_in(cls, quick=None, artifacts=None) -> Series:
        """The series of the run an artefacts folder holds, whatever settings trained it (notebook 01's
        parameters or `python -m helpers train`'s options): notebooks 02-05 serve what was trained there.
        The mode's defaults when the folder holds no run; a run of older training code is trained again
        with its settings."""
        series = cls.from_parameters(quick, artifacts=artifacts)
        summary = series.layout().summary
        if not summary.is_file():
            return series
        config = RunSummary.load(summary).config
        trained = {k: config[k] for k in ("model", "dataset", "epochs", "lr", "image_size")}
        settings = tuple((k, v) for k, v in config.items() if k not in NOT_FINGERPRINTED)
        return dataclasses.replace(series, **trained, recorded=settings)

    def default_recipe(self) -> bool:
        """Whether this is the bundled data's default quick recipe, the run CI trains and the notebooks'
        bounds were measured on (helpers.measure.targets); other runs are reported, not judged."""
        config = self.train_config()
        return self.quick and config.fingerprint() == TrainConfig.quick(out_dir=config.out_dir).fingerprint()

    def describe(self) -> str:
        """One line: the mode, the training parameters and the artefacts folder."""
        config = self.train_config()
        return (
            f"{'quick' if self.quick else 'full'} mode | model: {config.model or 'the mode default'} | dataset: "
            f"{config.dataset} | epochs: {config.epochs} | lr: {config.lr:g} | image size: {config.image_size} | "
            f"artefacts: {shown(self.layout().root)}"
        )

    def layout(self) -> RunArtifacts:
        layout = RunArtifacts(Path(self.artifacts)) if self.artifacts else run_artifacts(quick=self.quick)
        layout.root.mkdir(parents=True, exist_ok=True)
        return layout

    def train_config(self) -> TrainConfig:
        overrides = {
            k: v
            for k, v in (
                ("model", self.model),
                ("dataset", self.dataset),
                ("epochs", self.epochs),
                ("lr", self.lr),
                ("image_size", self.image_size),
            )
            if v is not None
        }
        overrides["out_dir"] = str(self.layout().train_dir)
        if self.recorded is not None:
            return TrainConfig(**{**dict(self.recorded), **overrides})
        return TrainConfig.quick(**overrides) if self.quick else TrainConfig(**overrides)

    @_locked
    def ensure_trained(self) -> RunSummary:
        """The training summary (see helpers.train.run.train): the run in the artefacts folder if its
        fingerprint matches this configuration (and its checkpoint and split are there), else a new
        run, announced with its expected duration before it starts."""
        from helpers.train.run import train

        config, layout = self.train_config(), self.layout()
        fingerprint = config.fingerprint()
        previous = RunSummary.load(layout.summary) if layout.summary.is_file() else None
        if previous and previous.config_hash == fingerprint and layout.checkpoint.is_file() and layout.split.is_file():
            if (str(layout.root), fingerprint) not in _ANNOUNCED:  # once per process, not at every later step
                _ANNOUNCED.add((str(layout.root), fingerprint))
                print(f"reusing {shown(layout.checkpoint)} trained {previous.finished}, config hash {fingerprint}")
            return previous
        why = self._why_retrain(previous, config) if previous else f"no run in {shown(layout.train_dir)}"
        print(
            f"training {config.model or 'the default model'} (config hash {fingerprint}; {why}): "
            f"{TRAINING_TIME[self.quick]}",
            flush=True,
        )
        return train(config)

    def _why_retrain(self, previous: RunSummary, config: TrainConfig) -> str:
        """Which parameters or training source files differ from the run in the artefacts folder."""
        before, now = previous.config, config.as_record()
        changed = (k for k in now.keys() | before.keys() if before.get(k) != now.get(k))
        parameters = sorted(k for k in changed if k not in NOT_FINGERPRINTED)
        code = changed_files(previous.code, code_digests(TRAINING_CODE))
        reasons = [f"parameters changed: {', '.join(parameters)}"] if parameters else []
        reasons += [f"training code changed: {', '.join(code)}"] if code else []
        held = f"{shown(self.layout().train_dir)} holds config hash {previous.config_hash}"
        return "; ".join([held, *reasons])

    def split(self) -> Split:
        """The trained run's split (training writes it next to the checkpoint)."""
        self.ensure_trained()
        return Split.read(self.layout().split)

    @_locked
    def _current(self, path: Path, make, recipe: tuple[str, str] | None = None) -> Path:
        """`path` if it was made from the current training run (and records `recipe`, a metadata
        (key, value), when given), else made again by make(path)."""
        from helpers.export.onnx_export import recorded, training_run_of

        fingerprint = self.ensure_trained().config_hash
        if not path.is_file():
            return make(path)
        if training_run_of(path) != fingerprint:
            print(f"note: {shown(path)} was made from another training run; making it again")
            return make(path)
        code = changed_files(json.loads(recorded(path, "code") or "null"), code_digests(EXPORT_CODE))
        if code:
            print(f"note: {shown(path)} was made by other export code ({', '.join(code)}); making it again")
            return make(path)
        if recipe and recorded(path, recipe[0]) != recipe[1]:
            print(f"note: {shown(path)} was made by another {recipe[0]} recipe; making it again")
            return make(path)
        return path

    def ensure_onnx(self) -> Path:
        from helpers.export.onnx_export import export_checkpoint

        return self._current(self.layout().onnx, lambda path: export_checkpoint(self.ensure_trained().checkpoint, path))

    def calibration_inputs(self, limit: int = SERVED_CALIBRATION_IMAGES):
        """INT8 calibration tensors from the run's real training images, with the exported model's contract."""
        from helpers.export.quantize import calibration_inputs
        from helpers.runtime.model import Detector

        return calibration_inputs(self.split(), Detector(self.ensure_onnx()).config, limit)

    def ensure_int8(self) -> Path:
        from helpers.export.quantize import QUANTIZATION, quantize_int8

        return self._current(
            self.layout().int8,
            lambda path: quantize_int8(self.ensure_onnx(), path, self.calibration_inputs()),
            recipe=("quantization", QUANTIZATION),
        )

    @_locked
    def ensure_shipped(self) -> Path:
        """The model that ships, decided on the test images (helpers.export.ship) once per pair of
        models; the decision (shipped.json) is made again when either model is newer than it."""
        from helpers.export.ship import ShipDecision, decide

        fp32, int8, record = self.ensure_onnx(), self.ensure_int8(), self.layout().ship_decision
        if not record.is_file() or record.stat().st_mtime < max(fp32.stat().st_mtime, int8.stat().st_mtime):
            decide(fp32, int8, self.split().evaluation()).save(record)
        decision = ShipDecision.load(record)
        print(f"shipping {decision.model}: {decision.reason}")
        return self.layout().root / decision.model

    @_locked
    def ensure_zip(self, arch: str = "x86_64") -> dict:
        """The Lambda zip (without a model: the model goes to S3) and its size report; an existing
        zip is reused when it was built from the current pins and runtime sources."""
        from helpers.build.package import build, inputs_fingerprint

        layout = self.layout()
        if layout.zip_report(arch).is_file() and layout.zip(arch).is_file():
            report = json.loads(layout.zip_report(arch).read_text())
            if report.get("inputs_fingerprint") == inputs_fingerprint(arch, "3.12"):
                return report
        return build(arch, "3.12", out_dir=layout.dist_dir)


def _environment() -> Series:
    return Series.from_environment()


def artifacts() -> RunArtifacts:
    return _environment().layout()


def train_config() -> TrainConfig:
    return _environment().train_config()


def ensure_trained() -> RunSummary:
    return _environment().ensure_trained()


def split() -> Split:
    return _environment().split()


def ensure_onnx() -> Path:
    return _environment().ensure_onnx()


def ensure_int8() -> Path:
    return _environment().ensure_int8()


def ensure_shipped() -> Path:
    return _environment().ensure_shipped()


def ensure_zip(arch: str = "x86_64") -> dict:
    return _environment().ensure_zip(arch)
