"""A benchmark run's results, typed: one dataclass per measured figure, built once from what
`measure.run` measured (or from a saved results.json) and read by attribute by the goals and the report.

results.json keeps its layout (`Results.to_json` writes what `from_json` reads), so a report can be
rendered again from a saved run; every section may be missing, as in a partial run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Timing:
    """Latency percentiles in milliseconds (helpers.measure.timing); the rest of what was measured
    (min_ms, n, ...) is kept as it came."""

    p50_ms: float
    p90_ms: float | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict) -> Timing:
        rest = {k: v for k, v in data.items() if k not in ("p50_ms", "p90_ms")}
        return cls(data["p50_ms"], data.get("p90_ms"), rest)

    def to_json(self) -> dict:
        return {"p50_ms": self.p50_ms, **({"p90_ms": self.p90_ms} if self.p90_ms is not None else {}), **self.extra}


def _timings(data: dict) -> dict[str, Timing]:
    return {name: Timing.from_json(value) for name, value in data.items()}


@dataclass(frozen=True)
class BytesToTensor:
    """JPEG bytes -> model tensor, ours against OpenCV imdecode + albumentations, for one input."""

    ours: Timing
    opencv_albumentations: Timing

    @property
    def ratio(self) -> float:
        return self.opencv_albumentations.p50_ms / self.ours.p50_ms


@dataclass(frozen=True)
class Inference:
    """One model at one thread count: PyTorch eager, ONNX Runtime FP32 and INT8, and the files' sizes."""

    model: str
    threads: int
    torch: Timing
    ort_fp32: Timing
    ort_int8: Timing
    fp32_mb: float | None = None
    int8_mb: float | None = None

    @property
    def key(self) -> str:
        """How results.json and the report's table name the row."""
        return f"{self.model} @ {self.threads}"

    @property
    def ort_speedup(self) -> float:
        return self.torch.p50_ms / self.ort_fp32.p50_ms

    @property
    def int8_speedup(self) -> float:
        return self.ort_fp32.p50_ms / self.ort_int8.p50_ms

    @classmethod
    def from_json(cls, key: str, data: dict) -> Inference:
        model, _, threads = key.rpartition(" @ ")
        timings = {k: Timing.from_json(data[k]) for k in ("torch", "ort_fp32", "ort_int8")}
        return cls(model, int(threads), **timings, fp32_mb=data.get("fp32_mb"), int8_mb=data.get("int8_mb"))

    def to_json(self) -> dict:
        sizes = {k: v for k, v in (("fp32_mb", self.fp32_mb), ("int8_mb", self.int8_mb)) if v is not None}
        return {k: getattr(self, k).to_json() for k in ("torch", "ort_fp32", "ort_int8")} | sizes


@dataclass(frozen=True)
class Int8Accuracy:
    """FP32 and INT8 through the served Detector on images the model never trained on (the figures
    of helpers.evaluate.metrics.evaluate_detector: map, map_50, ...)."""

    images: dict[str, int]
    fp32: dict
    int8: dict

    @property
    def image_count(self) -> int:
        return sum(self.images.values())

    @property
    def points_lost(self) -> float:
        """COCO mAP points INT8 loses (negative: gained)."""
        return 100 * (self.fp32["map"] - self.int8["map"])


@dataclass(frozen=True)
class ColdInit:
    """The x86_64 zip under the runtime client: cold init, the handler's own init, requests, memory."""

    cold_init_ms: float
    peak_rss_mb: float
    handler_init_ms: float | None = None
    first_request_ms: float | None = None
    warm: Timing | None = None

    @classmethod
    def from_json(cls, data: dict) -> ColdInit:
        warm = Timing.from_json(data["warm"]) if "warm" in data else None
        return cls(**{k: v for k, v in data.items() if k != "warm"}, warm=warm)

    def to_json(self) -> dict:
        data = {k: v for k, v in dataclasses.asdict(self).items() if v is not None and k != "warm"}
        return data | ({"warm": self.warm.to_json()} if self.warm else {})


@dataclass(frozen=True)
class Request:
    """The handler in process on one photo size: the median of each of its timings (ms)."""

    total: float
    jpeg_mb: float | None = None
    decode: float | None = None
    preprocess: float | None = None
    inference: float | None = None
    postprocess: float | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict) -> Request:
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(
            **{k: v for k, v in data.items() if k in known}, extra={k: v for k, v in data.items() if k not in known}
        )

    def to_json(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None and k != "extra"} | self.extra


@dataclass(frozen=True)
class Results:
    """Every section of a run; a section the run did not measure is empty (or None)."""

    environment: str = ""
    skipped: dict[str, str] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)  # name -> how it was obtained
    preprocessing: dict[str, Timing] = field(default_factory=dict)
    bytes_to_tensor: dict[str, BytesToTensor] = field(default_factory=dict)  # by input
    inference: list[Inference] = field(default_factory=list)
    training_step: dict[str, Timing] = field(default_factory=dict)
    gemm_peak_gflops_2_threads: float | None = None
    int8_accuracy: dict[str, Int8Accuracy] = field(default_factory=dict)
    zips: dict[str, dict] = field(default_factory=dict)  # arch -> zipped_bytes, unzipped_bytes, ...
    cold_init: dict[str, ColdInit] = field(default_factory=dict)
    serving_model: str | None = None
    by_size: dict[str, Request] = field(default_factory=dict)  # "0.3 MP" -> the request's timings
    # The serving levers (helpers.measure.benchmark.levers.measure_levers: rows, images, shipped, ...).
    levers: dict = field(default_factory=dict)
    int8_gemm_peak_gops_2_threads: float | None = None
    memory: list[dict] = field(default_factory=list)  # helpers.measure.lambda_share.sweep's rows

    def lever(self, name: str) -> dict | None:
        return next((row for row in self.levers.get("rows", []) if row["lever"] == name), None)

    def inference_of(self, model: str, threads: int) -> Inference | None:
        return next((row for row in self.inference if (row.model, row.threads) == (model, threads)), None)

    @classmethod
    def from_json(cls, data: dict) -> Results:
        return cls(
            environment=data.get("environment", ""),
            skipped=data.get("skipped", {}),
            models=data.get("models", {}),
            preprocessing=_timings(data.get("preprocessing", {})),
            bytes_to_tensor={
                size: BytesToTensor(Timing.from_json(v["ours"]), Timing.from_json(v["opencv_albumentations"]))
                for size, v in data.get("bytes_to_tensor", {}).items()
            },
            inference=[Inference.from_json(key, v) for key, v in data.get("inference", {}).items()],
            training_step=_timings(data.get("training_step", {})),
            gemm_peak_gflops_2_threads=data.get("gemm_peak_gflops_2_threads"),
            int8_accuracy={name: Int8Accuracy(**v) for name, v in data.get("int8_accuracy", {}).items()},
            zips=data.get("zips", {}),
            cold_init={name: ColdInit.from_json(v) for name, v in data.get("cold_init", {}).items()},
            serving_model=data.get("serving_model"),
            by_size={size: Request.from_json(v) for size, v in data.get("by_size", {}).items()},
            levers=data.get("levers", {}),
            int8_gemm_peak_gops_2_threads=data.get("int8_gemm_peak_gops_2_threads"),
            memory=data.get("memory", []),
        )

    def to_json(self) -> dict:
        """results.json: the layout measure.run has always written."""
        return {
            "environment": self.environment,
            "skipped": self.skipped,
            "preprocessing": {k: v.to_json() for k, v in self.preprocessing.items()},
            "bytes_to_tensor": {
                k: {"ours": v.ours.to_json(), "opencv_albumentations": v.opencv_albumentations.to_json()}
                for k, v in self.bytes_to_tensor.items()
            },
            "models": self.models,
            "inference": {row.key: row.to_json() for row in self.inference},
            "training_step": {k: v.to_json() for k, v in self.training_step.items()},
            "gemm_peak_gflops_2_threads": self.gemm_peak_gflops_2_threads,
            "int8_accuracy": {k: dataclasses.asdict(v) for k, v in self.int8_accuracy.items()},
            "zips": self.zips,
            "cold_init": {k: v.to_json() for k, v in self.cold_init.items()},
            "serving_model": self.serving_model,
            "by_size": {k: v.to_json() for k, v in self.by_size.items()},
            "levers": self.levers,
            "int8_gemm_peak_gops_2_threads": self.int8_gemm_peak_gops_2_threads,
            "memory": self.memory,
        }
