"""Run the notebook series headless, in order, on the bundled data: `python -m helpers run-all`.

Quick mode by default (minutes); `--full` trains for real. Executed notebooks and every artefact go to
one folder (artifacts/quick or artifacts/full); existing artefacts are reused, so re-running is cheap
and gives the same result. Stops at the first failing notebook, naming it and the failing cell.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from helpers.paths import NOTEBOOKS_DIR, RunArtifacts, shown

SERIES = (
    "01_train.ipynb",
    "02_export_onnx.ipynb",
    "03_preprocessing_parity.ipynb",
    "04_lambda_package.ipynb",
    "05_deploy.ipynb",
)


class NotebookFailed(RuntimeError):
    pass


def run_notebook(source: Path, destination: Path, timeout: int = 7200) -> float:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook = nbformat.read(source, as_version=4)
    client = NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(source.parent)}}
    )
    started = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as err:
        failing = next(
            (
                i
                for i, c in enumerate(notebook.cells)
                if c.cell_type == "code" and any(o.get("output_type") == "error" for o in c.get("outputs", []))
            ),
            None,
        )
        cell = notebook.cells[failing].source.splitlines()[0] if failing is not None else "?"
        raise NotebookFailed(
            f"{source.name} failed in cell {failing} ({cell!r}): {err.ename}: {err.evalue}\n"
            f"executed notebook with the traceback: {destination}"
        ) from None
    finally:
        nbformat.write(notebook, destination)
    return time.perf_counter() - started


def summary(layout: RunArtifacts) -> list[str]:
    lines = [f"artefacts: {shown(layout.root)}"]
    if layout.summary.is_file():
        s = json.loads(layout.summary.read_text())
        lines.append(
            f"  trained {s['model']} ({s['weights_used']}), {s['epochs']} epochs, "
            f"{s['seconds_per_epoch']} s/epoch, best real-valid mAP {s['best_val_real_map']:.3f}"
        )
        lines.append(f"  checkpoint {shown(s['checkpoint'])}")
    for path in (layout.onnx, layout.int8):
        if path.is_file():
            lines.append(f"  {path.name:16} {path.stat().st_size / 1e6:6.1f} MB")
    if layout.zip_report().is_file():
        r = json.loads(layout.zip_report().read_text())
        lines.append(
            f"  lambda zip {r['zipped_bytes'] / 2**20:.1f} MiB zipped / {r['unzipped_bytes'] / 2**20:.1f} MiB unzipped: {shown(r['zip'])}"
        )
    if layout.deployment.is_file():
        d = json.loads(layout.deployment.read_text())
        lines.append(f"  deployment record ({d['target']}): {shown(layout.deployment)}")
    lines.append(f"  executed notebooks: {shown(layout.notebooks_dir)}")
    return lines


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m helpers run-all", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="full training (default: quick mode)")
    args = parser.parse_args(argv)
    os.environ["HELPERS_QUICK"] = "0" if args.full else "1"
    from helpers import pipeline

    layout = pipeline.artifacts()
    out_dir = layout.notebooks_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"running {len(SERIES)} notebooks in {'full' if args.full else 'quick'} mode -> {layout.root}", flush=True)
    for index, name in enumerate(SERIES, 1):
        print(f"[{index}/{len(SERIES)}] {name} ...", end=" ", flush=True)
        try:
            seconds = run_notebook(NOTEBOOKS_DIR / name, out_dir / name)
        except NotebookFailed as err:
            print("FAILED", flush=True)
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"ok ({seconds:.0f} s)", flush=True)
    print("\n".join(summary(layout)))
    return 0
