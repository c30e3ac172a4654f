import os
import zipfile

import pytest
from hypothesis import Phase, settings

from helpers.build import interpreters, native
from helpers.data import dataset as fridge_data
from helpers.runtime import handler, storage

os.environ.setdefault("HELPERS_QUICK", "1")

# `make mutation` (--hypothesis-profile=mutation): a mutant that fails a property test is killed by the
# first failing example; shrinking it to the smallest would only spend the mutant's time budget.
settings.register_profile("mutation", phases=[Phase.explicit, Phase.reuse, Phase.generate])

#: Fixtures that train, build a Lambda zip or run the IceVision lane: tests using them are `slow`
#: (left out of `make test-fast`; `make test` runs everything).
SLOW_FIXTURES = {"trained", "lambda_zip", "lane_out"}


#: Under pytest-xdist (`make test`: `-n 2 --dist loadgroup`), the tests of one session-wide artefact
#: run in one worker, which makes it once; the other worker takes the rest meanwhile. (`make test` runs
#: the IceVision lane in a process of its own.)
SHARED_WORKER_FIXTURES = {"trained", "lambda_zip"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if SLOW_FIXTURES & fixtures:
            item.add_marker(pytest.mark.slow)
        if SHARED_WORKER_FIXTURES & fixtures:
            item.add_marker(pytest.mark.xdist_group("trained model"))


#: Set by .ci/run: CI installs what every test needs (qemu, the cross compiler, CPython 3.8 and 3.12,
#: Chromium), so a test that would skip for want of it fails instead; users' machines may still skip.
STRICT_SKIPS = os.environ.get("HELPERS_STRICT_SKIPS", "") not in ("", "0")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if STRICT_SKIPS and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped where it must run (HELPERS_STRICT_SKIPS=1): {reason}"


@pytest.fixture(scope="session", autouse=True)
def letterbox_kernel():
    """The tests run what the Lambda runs: the compiled letterbox kernel (tests/test_preprocess.py also
    runs the NumPy path it replaces), built before the first test, not when pytest imports this file."""
    native.build_in_place()


@pytest.fixture(autouse=True)
def fresh_handler(monkeypatch):
    """Every test starts with no handler state and no cached S3 client, so none sees what another
    initialised (another model, a moto endpoint since shut down), whatever the order."""
    monkeypatch.setattr(handler, "_STATE", None)
    storage.client.cache_clear()


#: The tiny detector's fixed boxes (xyxy, model input pixels, inside the letterbox of any usual aspect
#: ratio), their labels, and the offsets that make their scores sigmoid(image mean + offset): distinct,
#: in descending order, and different for images of different brightness.
TINY_BOXES = [
    [100, 100, 200, 200],
    [150, 120, 300, 260],
    [60, 170, 180, 330],
    [200, 130, 340, 200],
    [120, 200, 260, 250],
]
TINY_LABELS = [1, 2, 3, 4, 1]
TINY_OFFSETS = [2.0, 1.0, 0.3, -0.4, -1.5]


def _tiny_detector(path, score_threshold=None):
    """An ONNX detector that meets the model contract (input images float32 [1, 3, 384, 384], outputs
    boxes/scores/labels, contract metadata) and is built in milliseconds, without training."""
    import onnx
    from onnx import TensorProto, helper

    from helpers.export.onnx_export import OPSET, write_metadata
    from helpers.runtime.classmap import ClassMap
    from helpers.runtime.config import FRIDGE_CLASSES
    from helpers.runtime.contract import ModelContract

    contract = ModelContract(ClassMap(FRIDGE_CLASSES), score_threshold=score_threshold)

    def const(name, kind, values, dims):
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(name + "_v", kind, dims, values))

    n = len(TINY_BOXES)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", [contract.input_name], ["mean"], keepdims=0),
            const("offsets", TensorProto.FLOAT, TINY_OFFSETS, [n]),
            helper.make_node("Add", ["mean", "offsets"], ["logits"]),
            helper.make_node("Sigmoid", ["logits"], ["scores"]),
            const("boxes", TensorProto.FLOAT, [v for box in TINY_BOXES for v in box], [n, 4]),
            const("labels", TensorProto.INT64, TINY_LABELS, [n]),
        ],
        "tiny_detector",
        [helper.make_tensor_value_info(contract.input_name, TensorProto.FLOAT, contract.input_shape)],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["n", 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n"]),
            helper.make_tensor_value_info("labels", TensorProto.INT64, ["n"]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    write_metadata(model, {**contract.to_metadata(), "model_name": "tiny"})
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def make_tiny_model(tmp_path_factory):
    """make(score_threshold=None) -> the tiny detector's path, its metadata carrying that served
    threshold (helpers.score_threshold) when one is given; one file per threshold per session."""
    made = {}

    def make(score_threshold=None):
        if score_threshold not in made:
            made[score_threshold] = _tiny_detector(tmp_path_factory.mktemp("tiny") / "tiny.onnx", score_threshold)
        return made[score_threshold]

    return make


@pytest.fixture(scope="session")
def tiny_model(make_tiny_model):
    return make_tiny_model()


@pytest.fixture
def tiny_handler(tiny_model):
    """The handler initialised for this test on the tiny detector: SCORE_THRESHOLD 0 answers with every
    box; metrics off (tests/test_emf.py has them)."""
    return handler.init(
        {"MODEL_PATH": str(tiny_model), "SCORE_THRESHOLD": "0", "LOG_LEVEL": "WARNING", "METRICS_NAMESPACE": ""}
    )


@pytest.fixture(scope="session")
def sample_records():
    return fridge_data.load_sample()


@pytest.fixture(scope="session")
def fridge_photos_coco(tmp_path_factory):
    """The 6 bundled fridge photos as a COCO export: a dataset folder on which an epoch takes seconds,
    for tests of the training's bookkeeping rather than of its model."""
    from helpers.data.convert import convert

    export = tmp_path_factory.mktemp("fridge-photos") / "coco"
    convert(fridge_data.SAMPLE_DIR, "coco", export)
    return export


@pytest.fixture(scope="session")
def sample_jpegs(sample_records):
    return {r.image_path.name: r.image_path.read_bytes() for r in sample_records}


@pytest.fixture(scope="session")
def trained():
    """The real quick-mode training run (Lite0 on the sample + synthetic set, about 2½ min): its
    RunSummary. It is the run `make run` and the notebooks use (artifacts/quick/train), so the
    test session trains once and the notebooks under nbval reuse it."""
    from helpers.pipeline import steps

    assert steps.quick_mode()
    return steps.ensure_trained()


@pytest.fixture(scope="session")
def served_graph_test_figures(trained):
    """The trained checkpoint's test figures in PyTorch, computing what the exported graph computes
    (its score floor and 75 proposals, where training's own report pooled 150): what the served ONNX
    model must measure, up to float noise."""
    from helpers.export.onnx_export import prepare_for_serving
    from helpers.pipeline import steps
    from helpers.train.module import load_checkpoint
    from helpers.train.threshold import test_report

    module = load_checkpoint(trained.checkpoint)
    prepare_for_serving(module.model)
    return test_report(module, steps.split().evaluation(), trained.served_threshold)


@pytest.fixture(scope="session")
def onnx_model(trained, tmp_path_factory):
    """The quick-trained checkpoint exported to ONNX (with metadata). min_score=0 keeps every
    detection the graph can emit, so a barely trained model still gives boxes to compare."""
    from helpers.export.onnx_export import export_checkpoint

    return export_checkpoint(trained.checkpoint, tmp_path_factory.mktemp("onnx") / "model.onnx", min_score=0.0)


@pytest.fixture(scope="session")
def lambda_zip(tmp_path_factory):
    """The real x86_64 deployment zip (no model inside), built once per test session."""
    from helpers.build import package

    if interpreters.find_python("3.12") is None:
        pytest.skip("no CPython 3.12 (PATH or pyenv) to build the zip")
    return package.build("x86_64", "3.12", out_dir=tmp_path_factory.mktemp("dist"))


class LambdaContext:
    """The attributes of the Lambda context object the handler uses."""

    def __init__(self, request_id="req-123"):
        self.aws_request_id = request_id
        self.function_name = "fridge-detector-test"
        self.memory_limit_in_mb = 2048

    def get_remaining_time_in_millis(self):
        return 30_000


@pytest.fixture
def lambda_context():
    return LambdaContext()


@pytest.fixture
def fridge_zip(tmp_path):
    """make(n_images=128) -> a zip shaped like the official archive (one folder with images/ +
    annotations/) holding n real VOC images: the 6 sample photos, cycled under new names."""

    def make(n_images: int = fridge_data.FRIDGE_IMAGE_COUNT):
        archive = tmp_path / "odFridgeObjects.zip"
        sources = sorted(fridge_data.SAMPLE_DIR.glob("annotations/*.xml"))
        with zipfile.ZipFile(archive, "w") as zf:
            for index in range(n_images):
                xml_path = sources[index % len(sources)]
                jpg, name = xml_path.stem + ".jpg", f"{index + 1}.jpg"
                zf.write(fridge_data.SAMPLE_DIR / "images" / jpg, f"odFridgeObjects/images/{name}")
                xml = xml_path.read_text().replace(f"<filename>{jpg}</filename>", f"<filename>{name}</filename>")
                zf.writestr(f"odFridgeObjects/annotations/{index + 1}.xml", xml)
        return archive

    return make


@pytest.fixture
def faulty_s3(tiny_model, monkeypatch):
    """(server, url): tests/s3_faults.FaultyS3 serving the tiny detector at s3_faults.KEY, and the
    handler's S3 client pointed at it with the handler's own settings (a 1 s read timeout, so that a
    stall costs seconds). Its retries are real but do not sleep (botocore waits up to 1, 2, 4 s
    between tries of a throttled request)."""
    import threading

    import boto3
    from botocore.config import Config
    from botocore.retries.standard import ExponentialBackoff
    from s3_faults import CREDENTIALS, KEY, FaultyS3

    server = FaultyS3({KEY: tiny_model.read_bytes()})
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)
    config = Config(**{**storage.CLIENT_CONFIG, "read_timeout": 1})
    client = boto3.client("s3", endpoint_url=url, config=config)
    monkeypatch.setattr(storage, "client", lambda: client)
    yield server, url
    server.shutdown()
    server.server_close()


@pytest.fixture
def made_up_zip(tmp_path):
    """What deploy's checks, CloudFormation and moto's Lambda look at in an x86_64 deployment zip: the
    handler's module and one extension named for x86_64 (not importable: never run)."""
    path = tmp_path / "lambda.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("helpers/runtime/handler.py", "def handler(event, context):\n    return {}\n")
        zf.writestr("onnxruntime/capi/onnxruntime_pybind11_state.cpython-312-x86_64-linux-gnu.so", b"")
    return path
