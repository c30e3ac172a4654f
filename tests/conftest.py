import os
import zipfile

import pytest

from helpers.build import interpreters, native
from helpers.data import dataset as fridge_data

os.environ.setdefault("HELPERS_QUICK", "1")
# The tests run what the Lambda runs: the compiled letterbox kernel (tests/test_preprocess.py also
# runs the NumPy path it replaces).
native.build_in_place()

#: Fixtures that train, build a Lambda zip or run the IceVision lane: tests using them are `slow`
#: (left out of `make test-fast`; `make test` runs everything).
SLOW_FIXTURES = {"trained", "lambda_zip", "lane_out"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def sample_records():
    return fridge_data.load_sample()


@pytest.fixture(scope="session")
def sample_jpegs(sample_records):
    return {r.image_path.name: r.image_path.read_bytes() for r in sample_records}


@pytest.fixture(scope="session")
def trained():
    """The real quick-mode training run (Lite0 on the sample + synthetic set, about 3 min): its
    summary dict. It is the run `make run` and the notebooks use (artifacts/quick/train), so the
    test session trains once and the notebooks under nbval reuse it."""
    from helpers.tools import pipeline

    assert pipeline.quick_mode()
    return pipeline.ensure_trained()


@pytest.fixture(scope="session")
def onnx_model(trained, tmp_path_factory):
    """The quick-trained checkpoint exported to ONNX (with metadata). min_score=0 keeps every
    detection the graph can emit, so a barely trained model still gives boxes to compare."""
    from helpers.export.onnx_export import export_checkpoint

    return export_checkpoint(trained["checkpoint"], tmp_path_factory.mktemp("onnx") / "model.onnx", min_score=0.0)


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
