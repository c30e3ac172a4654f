"""Run the notebook series headless, in order, on the bundled data: `python -m helpers run-all`.

Quick mode by default (minutes); `--full` trains for real. `--set NAME=VALUE` changes a parameter of
every notebook whose `parameters` cell defines NAME (e.g. `--set EPOCHS=6 --set MODEL="'...'"`): as
papermill does, a cell tagged `injected-parameters` is added after that cell. Executed notebooks and
every artefact go to one folder (artifacts/quick or artifacts/full, or ARTIFACTS); artefacts made from
the same parameters are reused, so re-running is cheap and gives the same result. Stops at the first
failing notebook, naming it and the failing cell.
"""

from __future__ import annotations

import ast
import json
import os
import re
import sys
import time
from pathlib import Path

from helpers.paths import NOTEBOOKS_DIR, RunArtifacts, shown
from helpers.train.summary import RunSummary

SERIES = (
    "01_train.ipynb",
    "02_export_onnx.ipynb",
    "03_preprocessing_parity.ipynb",
    "04_lambda_package.ipynb",
    "05_deploy.ipynb",
)


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


class NotebookFailed(RuntimeError):
    pass


def parameters_cell(notebook) -> int | None:
    """Index of the cell tagged `parameters` (the papermill convention), None if there is none."""
    return next(
        (i for i, c in enumerate(notebook.cells) if "parameters" in c.get("metadata", {}).get("tags", [])), None
    )


def parameter_names(notebook) -> list[str]:
    """The names the parameters cell assigns, in order."""
    index = parameters_cell(notebook)
    if index is None:
        return []
    tree = ast.parse(notebook.cells[index].source)
    return [
        t.id
        for node in tree.body
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(t, ast.Name)
    ]


def inject_parameters(notebook, values: dict) -> None:
    """Add a cell tagged `injected-parameters` after the parameters cell, setting the given names
    that the notebook defines (what papermill does)."""
    from nbformat.v4 import new_code_cell

    known = [name for name in parameter_names(notebook) if name in values]
    if not known:
        return
    source = "# Parameters injected by `python -m helpers run-all --set`\n"
    source += "\n".join(f"{name} = {values[name]!r}" for name in known)
    cell = new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    notebook.cells.insert(parameters_cell(notebook) + 1, cell)


def clean(notebook) -> None:
    """What a committed notebook keeps: outputs without terminal escapes; no execution timing."""
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                output["text"] = ANSI_ESCAPE.sub("", output["text"])


def run_notebook(source: Path, destination: Path, timeout: int = 7200, parameters: dict | None = None) -> float:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook = nbformat.read(source, as_version=4)
    inject_parameters(notebook, parameters or {})
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(source.parent)}},
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
        clean(notebook)
        nbformat.write(notebook, destination)
    return time.perf_counter() - started


def summary(layout: RunArtifacts) -> list[str]:
    lines = [f"artefacts: {shown(layout.root)}"]
    if layout.summary.is_file():
        s = RunSummary.load(layout.summary)
        lines.append(
            f"  trained {s.model} ({s.weights_used}), {s.epochs} epochs, "
            f"{s.seconds_per_epoch} s/epoch, best real-valid mAP {s.best_val_real_map:.3f}"
        )
        lines.append(f"  checkpoint {shown(s.checkpoint)}")
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
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a notebook parameter (a Python literal; bare words are strings)",
    )
    args = parser.parse_args(argv)
    try:
        values = dict(_parameter(item) for item in args.set)
    except ValueError as err:
        parser.error(str(err))
    import nbformat

    defined = {name for n in SERIES for name in parameter_names(nbformat.read(NOTEBOOKS_DIR / n, as_version=4))}
    if unknown := sorted(set(values) - defined):
        parser.error(
            f"--set {', '.join(unknown)}: no notebook has such a parameter (known: {', '.join(sorted(defined))})"
        )
    if args.full:  # the notebooks say QUICK = True; --set QUICK=... wins over --full
        values = {"QUICK": False, **values}
    quick = values.get("QUICK", True)
    os.environ["HELPERS_QUICK"] = "1" if quick else "0"  # for the commands the notebooks run
    from helpers.pipeline import steps

    layout = steps.Series(quick=quick, artifacts=values.get("ARTIFACTS")).layout()
    out_dir = layout.notebooks_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"running {len(SERIES)} notebooks in {'quick' if quick else 'full'} mode -> {shown(layout.root)}",
        flush=True,
    )
    for index, name in enumerate(SERIES, 1):
        print(f"[{index}/{len(SERIES)}] {name} ...", end=" ", flush=True)
        try:
            seconds = run_notebook(NOTEBOOKS_DIR / name, out_dir / name, parameters=values)
        except NotebookFailed as err:
            print("FAILED", flush=True)
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"ok ({seconds:.0f} s)", flush=True)
    print("\n".join(summary(layout)))
    return 0


def _parameter(item: str) -> tuple[str, object]:
    name, sep, raw = item.partition("=")
    if not sep or not name.isidentifier():
        raise ValueError(f"--set expects NAME=VALUE, got {item!r}")
    try:
        return name, ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return name, raw  # a bare word: a string
