"""One entry point for every job: `python -m helpers COMMAND [options]` (`python -m helpers` lists them)."""

import importlib
import sys

#: command -> (module[:function], default main, taking argv; what it does)
COMMANDS = {
    "run-all": ("helpers.pipeline.run_all", "run notebooks 01 -> 05 headless (the main job)"),
    "train": ("helpers.train.run", "train a detector (also python -m helpers.train)"),
    "export": ("helpers.export.onnx_export", "checkpoint -> model.onnx, checked (also python -m helpers.export)"),
    "convert": ("helpers.data.__main__:convert_command", "rewrite a dataset in another format (VOC, COCO, YOLO)"),
    "native": ("helpers.build.native", "build the C letterbox kernel for this machine"),
    "package": ("helpers.build.package", "build the Lambda .zip"),
    "invoke": ("helpers.local.invoke", "invoke a built zip under the real runtime client"),
    "serve": ("helpers.local.serve", "the zip's handler behind a local Function URL, with a demo page"),
    "web": ("helpers.web.build", "the model in the browser: one static folder (page, WASM kernel, ONNX Runtime Web)"),
    "web-parity": ("helpers.web.parity", "the browser's detections against the handler's, in Chromium"),
    "arm64": ("helpers.local.arm64", "the arm64 zip under emulation vs x86_64"),
    "deploy": ("helpers.aws.deploy", "deploy / tear down the CloudFormation stack"),
    "batch": ("helpers.aws.batch", "batch inference: local, or a Step Functions stack"),
    "evaluate": ("helpers.evaluate.report", "the served model over a labelled set: COCO JSON, per-class CSV, plots"),
    "accuracy": ("helpers.measure.accuracy", "what each model learns, over seeds"),
    "benchmark": (
        "helpers.measure.benchmark.cli",
        "speed and size, side by side; writes BENCHMARKS.md and README's serving table",
    ),
    "memory": ("helpers.measure.memory", "latency and cost per MemorySize, measured here or on a deployed function"),
    "soak": ("helpers.measure.soak", "many warm invocations: memory and latency drift"),
    "icevision": ("helpers.baselines.icevision_lane", "the blog's own IceVision recipe on Python 3.8"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        width = max(map(len, COMMANDS))
        listing = "\n".join(f"  {name:<{width}}  {about}" for name, (_, about) in COMMANDS.items())
        print(f"usage: python -m helpers COMMAND [options]\n\n{listing}")
        return 0
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m helpers COMMAND [options]; COMMAND is one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module, _, function = COMMANDS[argv[0]][0].partition(":")
    return getattr(importlib.import_module(module), function or "main")(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
