"""Static INT8 quantisation of an exported detector with ONNX Runtime's quantisation tools."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from helpers.export.onnx_export import read_contract, read_metadata, save_validated, write_metadata
from helpers.runtime.config import PreprocessConfig
from helpers.runtime.decode import decode_for_model
from helpers.runtime.preprocess import preprocess


def calibration_records(split, limit: int | None = None) -> list:
    """The training images INT8 calibrates on: a run's real training images (helpers.data.dataset.Split),
    all of them or `limit` spread evenly over the list. The list runs fridge photos first, then object
    photos by class: its first few would be fridge photos and cartons only, whose activation ranges
    miss the other classes'."""
    records = split.real("train")
    if limit is None or limit >= len(records):
        return records
    return [records[i * len(records) // limit] for i in range(limit)]


def calibration_inputs(split, preprocessing: PreprocessConfig, limit: int | None = None) -> list[np.ndarray]:
    """INT8 calibration tensors of calibration_records, letterboxed and normalised as the model expects."""
    return [
        preprocess(decode_for_model(r.image_path.read_bytes(), preprocessing.image_size), preprocessing)[0]
        for r in calibration_records(split, limit)
    ]


QUANTIZED_OPS = ["Conv", "Gemm", "MatMul", "Relu"]
#: Convs (and the Relus after them) whose output is at most this many times smaller than the input
#: image stay in float: Lite0's stem, stages 0-1 and stage 2's first expansion, where INT8 lost the
#: most accuracy and saved no measurable time.
FLOAT_MAX_STRIDE = 4


#: The recipe, as a quantised model records it (metadata "quantization"): a model made by another
#: recipe is made again rather than reused (helpers.pipeline.steps).
def quantization_recipe(float_max_stride: int = FLOAT_MAX_STRIDE) -> str:
    return f"static QDQ int8, per-channel, {'/'.join(QUANTIZED_OPS)}, float up to stride {float_max_stride}"


QUANTIZATION = quantization_recipe()


def high_resolution_nodes(model: onnx.ModelProto, input_name: str, max_stride: int = FLOAT_MAX_STRIDE) -> list[str]:
    """Names of the Conv and Relu nodes whose output feature map is at stride <= max_stride of the
    input image in both height and width, from the shapes ONNX shape inference recorded
    (quant_pre_process runs it). A Conv without a known 4-D output shape is an error, not a guess."""
    shapes = {
        info.name: [d.dim_value for d in info.type.tensor_type.shape.dim]
        for info in [*model.graph.value_info, *model.graph.input, *model.graph.output]
    }
    image = shapes.get(input_name, [])[-2:]
    if len(image) != 2 or not all(image):
        raise ValueError("the model's input has no fixed side: cannot tell which layers run at high resolution")
    selected = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Relu"):
            continue
        shape = shapes.get(node.output[0], [])
        if len(shape) != 4 or not all(shape[-2:]):
            if node.op_type == "Conv":
                raise ValueError(f"no static output shape for Conv {node.name!r}: cannot tell its stride")
            continue
        if all(side * max_stride >= full for side, full in zip(shape[-2:], image)):
            selected.append(node.name)
    return selected


def quantize_int8(
    model_path: str | Path,
    out_path: str | Path,
    calibration_inputs: list[np.ndarray],
    float_max_stride: int = FLOAT_MAX_STRIDE,
) -> Path:
    """Static QDQ INT8, per channel, Conv/Gemm/MatMul (NMS and box decoding stay float), calibrated on
    real preprocessed images (dynamic quantisation made these detectors slower). The layers at stride
    <= float_max_stride stay float (1: every layer runs in INT8).

    Relu is listed too, not to run it in INT8 but so the quantiser folds each Relu into the range of
    the Conv before it; left out, every Conv + Relu keeps Dequantize -> float Relu -> Quantize between
    two QLinearConvs. Clip (Lite0's ReLU6) is not listed: folding it cost accuracy for little speed."""

    input_name = read_contract(model_path).input_name

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._items = iter(calibration_inputs)

        def get_next(self):
            item = next(self._items, None)
            return None if item is None else {input_name: item}

    out_path = Path(out_path)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(model_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out_path),
            _Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            op_types_to_quantize=QUANTIZED_OPS,
            nodes_to_exclude=high_resolution_nodes(onnx.load(str(prepared)), input_name, float_max_stride),
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    # Carry the contract over: the quantised graph serves the same inputs and outputs.
    model = onnx.load(str(out_path))
    write_metadata(model, read_metadata(model_path) | {"quantization": quantization_recipe(float_max_stride)})
    save_validated(model, out_path, read_contract(model_path))
    return out_path
