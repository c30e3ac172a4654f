import os

import pytest

from helpers import data as fridge_data

os.environ.setdefault("HELPERS_QUICK", "1")


@pytest.fixture(scope="session")
def sample_records():
    return fridge_data.load_sample()


@pytest.fixture(scope="session")
def sample_jpegs(sample_records):
    return {r.image_path.name: r.image_path.read_bytes() for r in sample_records}


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A real quick-mode training run (small model, tiny synthetic set): its summary dict."""
    from helpers.train import TrainConfig, train

    out = tmp_path_factory.mktemp("train")
    return train(TrainConfig.quick(out_dir=str(out), n_synthetic=8, epochs=1, threads=2))
