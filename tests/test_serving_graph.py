"""The serving graph (helpers.export.serving_graph): the Gather merge computes torchvision's merge, the
exported graph loses its ScatterElements and not a detection, and the proposal count is what is served."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torchvision.ops import poolers

from helpers.export.onnx_export import export_onnx, recorded
from helpers.export.serving_graph import SERVING_GRAPH, TORCHVISION_GRAPH, ServingGraph, gather_merge_levels
from helpers.runtime.classmap import ClassMap
from helpers.runtime.config import FRIDGE_CLASSES, PREPROCESS
from helpers.runtime.contract import ModelContract
from helpers.runtime.decode import decode_for_model
from helpers.runtime.model import Detector
from helpers.runtime.preprocess import preprocess
from helpers.train.models import LITE0_MODEL, build_detector


@pytest.mark.parametrize("levels", [[0, 2, 1, 0, 2, 2, 1], [1, 1, 1], [2, 0], []])
def test_the_gather_merge_equals_torchvisions_merge(levels):
    levels = torch.tensor(levels, dtype=torch.int64)
    generator = torch.Generator().manual_seed(len(levels))
    unmerged = [torch.randn(int((levels == k).sum()), 4, 7, 7, generator=generator) for k in range(3)]
    assert torch.equal(gather_merge_levels(levels, unmerged), poolers._onnx_merge_levels(levels, unmerged))


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """A Lite0 detector (random head) exported as torchvision traces it and with the Gather merge alone."""
    torch.manual_seed(0)
    model, _ = build_detector(LITE0_MODEL, len(FRIDGE_CLASSES) + 1, PREPROCESS.image_size, weights="none")
    contract = ModelContract(ClassMap(FRIDGE_CLASSES), PREPROCESS)
    out = tmp_path_factory.mktemp("graphs")
    specs = {"torchvision": TORCHVISION_GRAPH, "gather": ServingGraph(proposals=None)}
    return {
        name: export_onnx(model.eval(), out / f"{name}.onnx", contract, LITE0_MODEL, "none", 0.0, graph=graph)
        for name, graph in specs.items()
    }


def _ops(path):
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def _outputs(path, records):
    detector = Detector(path, threads=1)
    for record in records:
        tensor, _ = preprocess(decode_for_model(record.image_path.read_bytes()))
        yield detector.session.run(None, {detector.input_name: tensor})


def test_the_gather_merge_drops_scatter_and_changes_no_output(graphs, sample_records):
    assert "ScatterElements" in _ops(graphs["torchvision"])
    assert "ScatterElements" in _ops(graphs["gather"])  # the 1-D position table only
    scatters = [n for n in onnx.load(str(graphs["gather"])).graph.node if n.op_type == "ScatterElements"]
    assert len(scatters) == 1
    found = 0
    for theirs, ours in zip(
        _outputs(graphs["torchvision"], sample_records), _outputs(graphs["gather"], sample_records)
    ):
        for a, b in zip(theirs, ours):
            np.testing.assert_array_equal(a, b)
        found += len(theirs[1])
    assert found > 0  # a random head still scores every class above 0


def _pooled_rois(path, tensor) -> int:
    """RoIs the box head pools: the rows of every RoiAlign's output, read by making them graph outputs."""
    model = onnx.load(str(path))
    pooled = [node.output[0] for node in model.graph.node if node.op_type == "RoiAlign"]
    model.graph.output.extend(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in pooled)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sum(len(rows) for rows in session.run(pooled, {session.get_inputs()[0].name: tensor}))


def test_the_served_graph_records_and_pools_its_proposal_count(graphs, onnx_model, sample_records):
    """onnx_model: the trained model exported as `make run` exports it (the default graph)."""
    assert recorded(onnx_model, "serving_graph") == SERVING_GRAPH.describe()
    assert recorded(graphs["torchvision"], "serving_graph") == TORCHVISION_GRAPH.describe()
    for record in sample_records:
        tensor, _ = preprocess(decode_for_model(record.image_path.read_bytes()))
        assert _pooled_rois(onnx_model, tensor) == SERVING_GRAPH.proposals
        assert _pooled_rois(graphs["gather"], tensor) == 150  # the Lite0 detector's own test setting
