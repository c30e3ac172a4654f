"""ONNX export: checker, metadata contract, parity with PyTorch, load-time contract errors, INT8."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from helpers.export.compare import SCORE_TOLERANCE, compare_detections, parity, tie_explained
from helpers.export.onnx_export import export_onnx, prepare_for_serving, save_validated, write_metadata
from helpers.export.quantize import high_resolution_nodes, quantize_int8
from helpers.runtime.classmap import ClassMap
from helpers.runtime.config import DEFAULT_SCORE_THRESHOLD, FRIDGE_CLASSES, PREPROCESS, PreprocessConfig
from helpers.runtime.contract import ModelContract
from helpers.runtime.decode import decode_image
from helpers.runtime.detections import Detections
from helpers.runtime.model import Detector, ModelError
from helpers.runtime.preprocess import preprocess
from helpers.train.backbones import WEIGHTS_RECORD
from helpers.train.models import BLOG_MODEL, build_detector
from helpers.train.module import load_checkpoint


def _inputs(records, config: PreprocessConfig = PREPROCESS) -> list[np.ndarray]:
    return [preprocess(decode_image(r.image_path.read_bytes()), config)[0] for r in records]


@pytest.fixture(scope="module")
def sample_inputs(sample_records, trained):
    """The sample photos as the quick model takes them (its letterbox side is the quick mode's)."""
    return _inputs(sample_records, load_checkpoint(trained.checkpoint).preprocess)


def test_exported_model_is_checked_and_self_describing(onnx_model, trained):
    model = onnx.load(str(onnx_model))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 17
    assert [i.name for i in model.graph.input] == ["images"]
    assert [o.name for o in model.graph.output] == ["boxes", "scores", "labels"]
    detector = Detector(onnx_model)
    assert detector.config == dataclasses.replace(PREPROCESS, image_size=trained.config["image_size"])
    assert detector.class_map == ClassMap(FRIDGE_CLASSES)
    assert detector.metadata["model_name"] == trained.model
    assert detector.metadata["weights"] == WEIGHTS_RECORD == trained.weights_used
    assert detector.metadata["data"] == trained.data["description"] == "sample"
    assert detector.metadata["created"].startswith("20")
    outputs = {o.name: o.type for o in detector.session.get_outputs()}
    assert outputs == {"boxes": "tensor(float)", "scores": "tensor(float)", "labels": "tensor(int64)"}


#: Among all detections down to score 0, a quick-mode Faster R-CNN's near-zero ones can be reshuffled by
#: RPN top-k near-ties (see parity()), which a blank image still shows.
MIN_PAIRED_BARELY_TRAINED = 0.8
#: The trained quick model on the 6 sample photos, all 600 detections down to score 0: measured 600
#: paired, 0 ties, 0 unexplained for each of four trainings (seeds 42, 1, 2 and the committed run). At
#: most 1% unexplained, so a regression of a few detections fails (the 0.8 bound above would pass 20%).
MAX_UNEXPLAINED_TRAINED = 0.01


def _assert_parity(rows, min_paired=1.0):
    """Detections pair up only when their boxes meet the 1e-2 px target (parity() pairs at it), so the
    box target is checked by how many pair; a pair must then also meet the score target."""
    assert rows and all(r["paired_fraction"] >= min_paired for r in rows), rows
    if min_paired == 1.0:
        assert all(r["unmatched"] == 0 for r in rows), rows
    assert sum(r["detections_torch"] for r in rows) > 0
    assert max(r["score_max_abs_diff"] for r in rows) <= SCORE_TOLERANCE


def test_parity_trained_model_on_every_sample_image(onnx_model, trained, sample_inputs):
    module = load_checkpoint(trained.checkpoint)
    prepare_for_serving(module.model, 0.0)  # the fixture was exported with min_score=0
    rows = parity(module.model, onnx_model, sample_inputs, threshold=0.0)
    _assert_parity(rows, MIN_PAIRED_BARELY_TRAINED)
    detections = sum(r["detections_torch"] for r in rows)
    assert sum(r["unmatched"] for r in rows) <= MAX_UNEXPLAINED_TRAINED * detections, rows
    served = parity(module.model, onnx_model, sample_inputs, threshold=DEFAULT_SCORE_THRESHOLD)
    _assert_parity(served)  # every detection a user sees pairs within 1e-2 px and 1e-4 score
    assert sum(r["detections_torch"] for r in served) >= 6  # and there are real detections to compare


def test_blank_and_uniform_images_do_not_break_the_graph(onnx_model, trained):
    """Tracing bakes shapes in: an image without proposals once hit Reshape(0, -1) in ONNX Runtime."""
    detector = Detector(onnx_model)
    module = load_checkpoint(trained.checkpoint)
    prepare_for_serving(module.model, 0.0)
    side = detector.config.image_size
    inputs = [np.zeros((1, 3, side, side), np.float32)]
    inputs += [preprocess(np.full((200, 300, 3), value, np.uint8), detector.config)[0] for value in (0, 255)]
    for tensor in inputs:
        boxes, scores, labels = detector.session.run(None, {"images": tensor})
        assert boxes.shape == (len(scores), 4) and labels.shape == scores.shape
    rows = parity(module.model, onnx_model, inputs, threshold=0.0)
    assert all(r["paired_fraction"] >= MIN_PAIRED_BARELY_TRAINED for r in rows), rows


@pytest.mark.slow  # builds and exports a 129 MB RetinaNet
def test_untrained_blog_retinanet_exports_with_parity(tmp_path, sample_records):
    torch.manual_seed(0)
    model, _ = build_detector(BLOG_MODEL, 5, 384, weights="none")
    # Random weights score ~0.01 everywhere (RetinaNet's prior): keep everything for a real comparison.
    contract = ModelContract(ClassMap(FRIDGE_CLASSES), PREPROCESS)
    path = export_onnx(model, tmp_path / "retina.onnx", contract, BLOG_MODEL, "none", min_score=0.0)
    rows = parity(model, path, _inputs(sample_records[:3]), threshold=0.0)
    _assert_parity(rows)


def _tiny_model(path, shape, with_metadata=True):
    """A graph that honours the output names but has the given input shape."""
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, shape)
    boxes = helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["n", 4])
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n"])
    labels = helper.make_tensor_value_info("labels", TensorProto.INT64, ["n"])

    def const(name, dims, kind, values):
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(name + "_v", kind, dims, values))

    graph = helper.make_graph(
        [
            const("boxes", [0, 4], TensorProto.FLOAT, []),
            const("scores", [0], TensorProto.FLOAT, []),
            const("labels", [0], TensorProto.INT64, []),
        ],
        "tiny",
        [images],
        [boxes, scores, labels],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if with_metadata:
        entry = model.metadata_props.add()
        entry.key, entry.value = "helpers.classes", json.dumps(list(FRIDGE_CLASSES))
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("shape", [[1, 3, "height", "width"], [1, 3, 320, 320], ["batch", 3, 384, 384]])
def test_wrong_or_dynamic_input_shape_fails_at_load(tmp_path, shape):
    path = _tiny_model(tmp_path / "m.onnx", shape)
    with pytest.raises(ModelError, match=r"the contract is tensor\(float\) \[1, 3, 384, 384\]"):
        Detector(path)


def test_model_without_metadata_needs_a_class_map(tmp_path):
    path = _tiny_model(tmp_path / "m.onnx", [1, 3, 384, 384], with_metadata=False)
    with pytest.raises(ModelError, match="class_map.json"):
        Detector(path)
    blog_class_map = tmp_path / "class_map.json"
    blog_class_map.write_text(json.dumps({"background": 0, "carton": 1, "milk_bottle": 2, "water_bottle": 3, "can": 4}))
    detector = Detector(path, class_map_path=blog_class_map)
    assert detector.class_map.names == FRIDGE_CLASSES and detector.config == PreprocessConfig()
    with pytest.raises(ModelError, match="not found"):
        Detector(tmp_path / "missing.onnx")
    (tmp_path / "garbage.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="cannot load"):
        Detector(tmp_path / "garbage.onnx")


def test_the_contract_is_written_as_these_metadata_entries_and_read_back_whole():
    contract = ModelContract(ClassMap(FRIDGE_CLASSES), PREPROCESS, score_threshold=0.45)
    assert contract.to_metadata() == {
        "preprocess": PREPROCESS.to_json(),
        "classes": '["carton", "milk_bottle", "water_bottle", "can"]',
        "input": '{"name": "images", "shape": [1, 3, 384, 384], "type": "tensor(float)"}',
        "outputs": '["boxes", "scores", "labels"]',
        "contract": "input images float32 [1, 3, 384, 384] letterboxed+normalised; outputs boxes float32 [N,4] "
        "xyxy input pixels, scores float32 [N], labels int64 [N] (1..C), after score threshold and NMS",
        "score_threshold": "0.45",
    }
    assert "score_threshold" not in dataclasses.replace(contract, score_threshold=None).to_metadata()
    renamed = ModelContract(
        ClassMap(["can"]), PreprocessConfig(image_size=320), input_name="x", output_names=("b", "s", "l")
    )
    for written in (contract, renamed, dataclasses.replace(renamed, score_threshold=0.0)):
        assert ModelContract.from_metadata(written.to_metadata()) == written


def test_metadata_without_the_contract_keys_reads_as_the_defaults_or_needs_a_class_map():
    classes = ClassMap(FRIDGE_CLASSES)
    assert ModelContract.from_metadata({"classes": json.dumps(FRIDGE_CLASSES)}) == ModelContract(classes)
    assert ModelContract.from_metadata({}, classes=classes) == ModelContract(classes)
    other = ClassMap(["can"])  # a class map given wins over the metadata's
    assert ModelContract.from_metadata({"classes": '["carton"]'}, classes=other).classes == other
    with pytest.raises(ValueError) as info:
        ModelContract.from_metadata({"outputs": '["boxes", "scores", "labels"]'})
    assert str(info.value) == "no class names in the model metadata; pass a class_map.json"


def test_an_export_is_saved_only_when_it_meets_its_contract(tmp_path):
    """What follows every export and quantisation: checker, contract read back, load, one blank run."""
    contract = ModelContract(ClassMap(FRIDGE_CLASSES), PREPROCESS, score_threshold=0.45)
    model = onnx.load(str(_tiny_model(tmp_path / "source.onnx", contract.input_shape)))
    write_metadata(model, contract.to_metadata())
    save_validated(model, tmp_path / "ok.onnx", contract)
    assert Detector(tmp_path / "ok.onnx").contract == contract
    with pytest.raises(ValueError, match="does not read back"):
        save_validated(model, tmp_path / "other.onnx", dataclasses.replace(contract, score_threshold=0.5))
    dynamic = onnx.load(str(_tiny_model(tmp_path / "dynamic.onnx", [1, 3, "height", "width"])))
    write_metadata(dynamic, contract.to_metadata())
    with pytest.raises(ModelError, match="the contract is"):
        save_validated(dynamic, tmp_path / "dynamic.onnx", contract)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.onnx", "source.onnx"]  # failures removed


def test_int8_model_is_smaller_keeps_the_contract_and_runs(onnx_model, tmp_path, sample_inputs):
    int8 = quantize_int8(onnx_model, tmp_path / "model_int8.onnx", sample_inputs[:4])
    assert int8.stat().st_size < 0.5 * onnx_model.stat().st_size
    quantized = Detector(int8)
    assert quantized.class_map == Detector(onnx_model).class_map
    assert "static QDQ" in quantized.metadata["quantization"]
    graph = onnx.load(str(int8)).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.node}
    # Every Relu is folded into the Conv before it: none runs in float between Dequantize and Quantize.
    producers = {output: n.op_type for n in graph.node for output in n.output}
    relus = [n for n in onnx.load(str(onnx_model)).graph.node if n.op_type == "Relu"]
    assert relus, "the test model has Relu activations to fold"
    assert not [n.name for n in graph.node if n.op_type == "Relu" and producers.get(n.input[0]) == "DequantizeLinear"]
    # Lite0's stem, stages 0-1 and stage 2's first expansion (still at stride 4, before its strided
    # depthwise conv) keep float weights; every deeper Conv reads INT8 weights.
    at_stride_4_or_less = ("/conv_stem/", "/blocks.0/", "/blocks.1/", "/blocks.2.0/conv_pw/")
    int8_weights = {n.name: producers.get(n.input[1]) == "DequantizeLinear" for n in graph.node if n.op_type == "Conv"}
    float_weights = {name for name, quantized in int8_weights.items() if not quantized}
    assert float_weights and float_weights == {n for n in int8_weights if any(p in n for p in at_stride_4_or_less)}
    assert sum(int8_weights.values()) > len(int8_weights) / 2
    boxes, scores, labels = quantized.session.run(None, {"images": sample_inputs[0]})
    assert boxes.shape[1:] == (4,) and len(boxes) == len(scores) == len(labels)


def test_int8_float_layers_need_a_fixed_input_side(tmp_path):
    dynamic = onnx.load(str(_tiny_model(tmp_path / "m.onnx", [1, 3, "height", "width"])))
    with pytest.raises(ValueError, match="no fixed side"):
        high_resolution_nodes(dynamic, "images")


def _detections(boxes, scores, labels):
    return Detections(np.array(boxes, dtype=np.float32), np.array(scores, dtype=np.float32), labels)


def test_tie_rule_accepts_near_equal_twins_and_capped_tails_only():
    """The swap seen between eager and ORT on a quick model: NMS kept box A (0.17887) on one side and
    its overlapping neighbour B (0.17912) on the other."""
    eager = _detections([[13.6, 0, 240.3, 117.7], [0, 0, 50, 50]], [0.17887, 0.9], [1, 2])
    ort = _detections([[29.1, 0, 269.2, 123.9], [0, 0, 50, 50]], [0.17912, 0.9], [1, 2])
    assert tie_explained(0, eager, ort, at_cap=False) and tie_explained(0, ort, eager, at_cap=False)
    other_label = _detections([[29.1, 0, 269.2, 123.9]], [0.17912], [3])
    assert not tie_explained(0, eager, other_label, at_cap=False)
    weaker = _detections([[29.1, 0, 269.2, 123.9]], [0.15], [1])
    assert not tie_explained(0, eager, weaker, at_cap=False)
    far = _detections([[300, 300, 380, 380]], [0.17887], [1])
    assert not tie_explained(0, eager, far, at_cap=False)
    tail = _detections([[1, 1, 2, 2], [5, 5, 9, 9]], [0.5, 0.2001], [1, 1])
    assert tie_explained(1, tail, far, at_cap=True) and not tie_explained(1, tail, far, at_cap=False)


def test_nms_twins_count_as_ties_and_shifted_boxes_do_not_pair():
    """Measured on a quick model: float64 PyTorch kept proposal 64, ONNX Runtime its twin 113 (boxes
    0.028 px apart, scores equal to 1e-9). Pairing at the 1e-2 px target calls that a tie; a box an
    export shifted by 0.02 px does not pair, so it lowers paired_fraction, which the parity tests bound."""
    common = ([[100, 100, 200, 220]], [0.9], [2])
    reference = _detections(
        [[0, 38.84802, 10.95842, 84.60724]] + common[0], [0.00059584339] + common[1], [1] + common[2]
    )
    twin = _detections([[0, 38.85068, 10.95445, 84.63496]] + common[0], [0.00059584307] + common[1], [1] + common[2])
    row = compare_detections(reference, twin, max_detections=100)
    assert (row["matched"], row["ties"], row["unmatched"], row["paired_fraction"]) == (1, 2, 0, 0.5)
    shifted = _detections([[0.02, 38.86802, 10.97842, 84.62724]] + common[0], reference.scores, [1, 2])
    assert compare_detections(reference, shifted, max_detections=100)["matched"] == 1  # the shifted box stays unpaired


#: INT8 calibrated on every training image against FP32, mAP@0.5 on CI's run's 31 test images (33 boxes;
#: one box is ~3 points): measured -0.9 points lost (INT8 above FP32; 1.8 lost by the recipe before).
#: The bound is one box above no loss: a loss of a box or less passes, two boxes fail.
MAX_INT8_MAP50_LOSS_POINTS = 3.0


def test_served_calibration_spans_the_fridge_photos_and_every_class(trained):
    from helpers.data.dataset import Split
    from helpers.export.quantize import calibration_records
    from helpers.paths import split_file
    from helpers.pipeline.steps import SERVED_CALIBRATION_IMAGES
    from helpers.train.data import is_object_photo

    split = Split.read(split_file(Path(trained.checkpoint).parent))
    chosen = calibration_records(split, SERVED_CALIBRATION_IMAGES)
    names = [r.image_path.name for r in chosen]
    assert len(set(names)) == SERVED_CALIBRATION_IMAGES and set(names) <= set(split.train)
    training = split.real("train")
    assert {label for r in chosen for label in r.labels} == {label for r in training for label in r.labels}
    assert any(not is_object_photo(r) for r in chosen)  # a fridge photo: the list starts with them
    step = len(training) / SERVED_CALIBRATION_IMAGES  # evenly spaced over the list
    positions = [split.train.index(name) for name in names]
    assert all(abs(p - i * step) < 1 for i, p in enumerate(positions)), positions


def test_int8_keeps_the_test_accuracy_within_a_box_of_the_measured_loss(onnx_model, trained, tmp_path):
    from helpers.data.dataset import Split
    from helpers.evaluate.metrics import evaluate_detector
    from helpers.export.quantize import calibration_inputs
    from helpers.paths import split_file

    split = Split.read(split_file(Path(trained.checkpoint).parent))
    fp32 = Detector(onnx_model)
    int8 = Detector(quantize_int8(onnx_model, tmp_path / "int8.onnx", calibration_inputs(split, fp32.config)))
    test = split.evaluation()
    fp32_map50, int8_map50 = (evaluate_detector(d, test)["map_50"] for d in (fp32, int8))
    print(f"test mAP@0.5: FP32 {fp32_map50:.3f}, INT8 {int8_map50:.3f}")
    assert 100 * (fp32_map50 - int8_map50) <= MAX_INT8_MAP50_LOSS_POINTS
