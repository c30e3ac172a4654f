"""Build the Lambda deployment .zip: runtime half of helpers + onnxruntime + numpy + Pillow, trimmed.

    python -m helpers package --arch x86_64 --python 3.12 [--model MODEL.onnx] [--out-dir DIR] [--full]

Writes artifacts/<mode>/dist/lambda-<arch>.zip by default (helpers.paths), where helpers.aws.deploy looks.

The letterbox kernel (helpers/runtime/letterbox_kernel.c) is compiled for the zip's architecture
(helpers.build.native: the system C compiler for x86_64, Debian's gcc-aarch64-linux-gnu for arm64); without
that compiler the build fails, unless --without-kernel asks for the slower NumPy preprocessing.

Deterministic (sorted entries, fixed timestamps and modes, hash-based bytecode): the same inputs give
the same sha256. Fails (exit 2, one line) when the zip exceeds 50 MB or the tree 250 MB. boto3 is not
bundled: the managed runtime provides it and the handler imports it only for S3.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

from helpers.build import native
from helpers.build.arch import ARCHITECTURES
from helpers.build.interpreters import find_python, pip_install
from helpers.paths import PROJECT_ROOT, not_found, run_artifacts, shown
from helpers.runtime.checksum import sha256_file
from helpers.runtime.kernel import KERNEL_PATH


def lambda_requirements() -> tuple[str, ...]:
    """The exact pins the zip holds: pyproject.toml's `lambda` extra, their one home."""
    with open(PROJECT_ROOT / "pyproject.toml", "rb") as f:
        return tuple(tomllib.load(f)["project"]["optional-dependencies"]["lambda"])


LAMBDA_REQUIREMENTS = lambda_requirements()
ZIP_LIMIT = 50 * 1000 * 1000  # direct upload quota (AWS counts 50 MB as 50,000,000 bytes here)
UNZIPPED_LIMIT = 250 * 1000 * 1000
#: The whole Lambda boundary: the runtime folder and the (import-free) package marker above it.
RUNTIME_FILES = ("helpers/__init__.py", "helpers/runtime")
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)

#: What inference never loads, rule by rule with its reason; the build report gives each rule's bytes
#: removed, and the trimmed zip is run under the runtime client (tests/test_package.py).
TRIM_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "ONNX Runtime's C-API library: the Python extension links the runtime statically",
        ("onnxruntime/capi/libonnxruntime.so.*",),
    ),
    (
        "ONNX Runtime's offline tooling (quantisation, conversion, datasets): used on the development machine",
        (
            "onnxruntime/tools",
            "onnxruntime/transformers",
            "onnxruntime/quantization",
            "onnxruntime/datasets",
            "onnxruntime/backend",
            "onnxruntime/ThirdPartyNotices.txt",
        ),
    ),
    (
        "protobuf, flatbuffers, packaging: ONNX Runtime's dependencies for building models, not imported to run one",
        ("google", "flatbuffers", "packaging"),
    ),
    (
        "NumPy's tests, headers, build tools and modules the handler never imports",
        (
            "numpy/*/tests",
            "numpy/tests",
            "numpy/_core/include",
            "numpy/f2py",
            "numpy/_pyinstaller",
            "numpy/typing",
            "numpy/random",
            "numpy/fft",
            "numpy/polynomial",
            "numpy/ma",
            "numpy/testing",
            "numpy/_core/_*_tests.*.so",
            "numpy/_core/_simd.*.so",
            "numpy/_core/lib",
        ),
    ),
    (
        "type stubs and C headers: for type checkers and compilers",
        ("**/*.pyi", "**/py.typed", "numpy/**/*.pxd", "numpy/**/*.h"),
    ),
    (
        "Pillow's AVIF, FreeType, Tk and ICC plugins: decoding a JPEG or PNG needs none of them",
        ("PIL/_avif.*.so", "PIL/_imagingft.*.so", "PIL/_imagingtk.*.so", "PIL/_imagingcms.*.so"),
    ),
    ("console scripts", ("bin",)),
)
#: The trims done in code rather than by pattern, named as the build report names them.
UNUSED_LIBRARIES = "vendored shared libraries that no remaining extension links (readelf -d)"
METADATA = "dist-info files except the licences"
SYMBOLS = "symbols of the packages' own extensions (strip --strip-unneeded)"


def inputs_fingerprint(arch: str, python: str, kernel: bool = True) -> str:
    """What a zip is built from — the pins, the target, the kernel's compiler and every runtime source
    file — as 12 hex digits: an existing zip with the same fingerprint is the zip this code would build."""
    import hashlib

    compiler = native.compiler_version(arch) if kernel else None
    digest = hashlib.sha256(json.dumps([arch, python, list(LAMBDA_REQUIREMENTS), compiler]).encode())
    digest.update(Path(__file__).read_bytes())  # the trims and the report's shape
    for relative in RUNTIME_FILES:
        source = PROJECT_ROOT / relative
        for path in sorted([source] if source.is_file() else [*source.rglob("*.py"), *source.rglob("*.c")]):
            digest.update(path.relative_to(PROJECT_ROOT).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def _tree_size(root: Path) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for path in root.rglob("*"):
        if path.is_file():
            top = path.relative_to(root).parts[0]
            sizes[top] = sizes.get(top, 0) + path.stat().st_size
    return sizes


def _needed(library: Path) -> set[str]:
    out = subprocess.run(["readelf", "-d", str(library)], capture_output=True, text=True).stdout
    return {line.split("[", 1)[1].split("]", 1)[0] for line in out.splitlines() if "(NEEDED)" in line}


def _remove(path: Path) -> int:
    """Delete a file or folder; the bytes it held."""
    if path.is_dir():
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        shutil.rmtree(path)
        return size
    size = path.stat().st_size if path.exists() else 0
    path.unlink(missing_ok=True)
    return size


def _trim(root: Path) -> dict[str, int]:
    """Remove what inference never loads; {rule: bytes removed}."""
    removed = {}
    for reason, patterns in TRIM_RULES:
        removed[reason] = sum(_remove(p) for pattern in patterns for p in sorted(root.glob(pattern), reverse=True))
    removed[METADATA] = sum(
        _remove(path)
        for dist_info in root.glob("*.dist-info")
        for path in sorted(dist_info.rglob("*"), reverse=True)
        if path.is_file() and "licen" not in path.name.lower() and "licen" not in str(path.parent).lower()
    )
    # Vendored libraries that no remaining extension needs (e.g. libavif once _avif is gone).
    vendored = [lib for libs_dir in root.glob("*.libs") for lib in libs_dir.iterdir()]
    needed = set().union(*(_needed(so) for so in root.rglob("*.so*") if not so.parent.name.endswith(".libs")))
    while more := {n for lib in vendored if lib.name in needed for n in _needed(lib)} - needed:
        needed |= more  # libraries needing libraries
    removed[UNUSED_LIBRARIES] = sum(_remove(lib) for lib in vendored if lib.name not in needed)
    return removed


def _strip(root: Path) -> int:
    """strip --strip-unneeded on the packages' own extensions; the bytes saved. Libraries that auditwheel vendored
    (numpy.libs, pillow.libs) were rewritten with patchelf and break when stripped (numpy 2.4.6's
    OpenBLAS: "ELF load command address/offset not page-aligned"), so they are left as shipped."""
    strip = shutil.which("strip")
    if not strip:
        print("warning: no `strip` on PATH; shared objects left unstripped", file=sys.stderr)
        return 0
    saved = 0
    for library in sorted(root.rglob("*.so*")):
        if library.parent.name.endswith(".libs"):
            continue
        size = library.stat().st_size
        subprocess.run([strip, "--strip-unneeded", str(library)], check=False, capture_output=True)
        saved += size - library.stat().st_size
    return saved


def _add_runtime(root: Path, model: Path | None, arch: str, kernel: bool) -> None:
    """The runtime's Python files, its kernel built for `arch` (not this machine's development build),
    and the model."""
    for relative in RUNTIME_FILES:
        source = PROJECT_ROOT / relative
        if source.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.c", KERNEL_PATH.name)
            shutil.copytree(source, root / relative, ignore=ignore)
        else:
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / relative)
    if kernel:
        native.build(root / KERNEL_PATH.relative_to(PROJECT_ROOT), arch)
    if model:
        (root / "model").mkdir(exist_ok=True)
        shutil.copy2(model, root / "model" / "model.onnx")


def _compile(root: Path, python: Path) -> None:
    """Bytecode the target interpreter uses after unzip: hash-based, so mtimes do not matter, and
    with source paths as Lambda sees them (/var/task/...), not this build's temporary folder."""
    subprocess.run(
        [
            str(python),
            "-I",
            "-m",
            "compileall",
            "-q",
            "--invalidation-mode",
            "unchecked-hash",
            "-s",
            str(root),
            "-p",
            "/var/task",
            str(root),
        ],
        check=True,
    )


def _zip(root: Path, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(path.relative_to(root).as_posix(), ZIP_EPOCH)
            info.external_attr = (0o755 if os.access(path, os.X_OK) else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes(), compresslevel=9)


def build(
    arch: str = "x86_64",
    python: str = "3.12",
    model: Path | None = None,
    out_dir: Path | None = None,
    work_dir: Path | None = None,
    kernel: bool = True,
) -> dict:
    """Build <out_dir>/lambda-<arch>.zip (default: this mode's dist folder, helpers.paths); returns the
    size report (also written next to the zip as JSON). kernel=False: no letterbox kernel (the
    runtime then preprocesses in NumPy)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"--arch must be one of {sorted(ARCHITECTURES)}, not {arch!r}")
    if kernel:
        try:
            native.compiler_for(arch)
        except native.CompilerMissing as err:
            raise ValueError(f"{err}; install one, or pass --without-kernel for NumPy preprocessing") from None
    if model is not None and not Path(model).is_file():
        raise ValueError(not_found("model", model))
    interpreter = find_python(python)
    if interpreter is None:
        raise ValueError(f"no python{python} interpreter found (PATH or pyenv) to compile bytecode")
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        root = Path(tmp) / "package"
        pip_install(root, arch, python, LAMBDA_REQUIREMENTS)
        before = _tree_size(root)
        trimmed = _trim(root)
        trimmed[SYMBOLS] = _strip(root)
        _add_runtime(root, Path(model) if model else None, arch, kernel)
        _compile(root, interpreter)
        after = _tree_size(root)
        out = Path(out_dir) / f"lambda-{arch}.zip" if out_dir else run_artifacts().zip(arch)
        _zip(root, out)
    report = {
        "zip": str(out),
        "sha256": sha256_file(out),
        "arch": arch,
        "python": python,
        "requirements": list(LAMBDA_REQUIREMENTS),
        "zipped_bytes": out.stat().st_size,
        "unzipped_bytes": sum(after.values()),
        "untrimmed_unzipped_bytes": sum(before.values()),
        "per_package_before": dict(sorted(before.items())),
        "per_package_after": dict(sorted(after.items())),
        "trimmed_by_rule": trimmed,
        "handler": "helpers.runtime.handler.handler",
        "model_path": "model/model.onnx" if model else None,
        "letterbox_kernel": native.compiler_version(arch) if kernel else None,
        "inputs_fingerprint": inputs_fingerprint(arch, python, kernel),
    }
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    if report["zipped_bytes"] > ZIP_LIMIT:
        raise ValueError(f"{out} is {report['zipped_bytes'] / 1e6:.1f} MB zipped; the direct-upload limit is 50 MB")
    if report["unzipped_bytes"] > UNZIPPED_LIMIT:
        raise ValueError(f"{out} unzips to {report['unzipped_bytes'] / 1e6:.1f} MB; the limit is 250 MB")
    return report


def format_report(report: dict) -> str:
    lines = [
        f"{shown(report['zip'])}  sha256 {report['sha256'][:16]}…",
        f"letterbox kernel: {report['letterbox_kernel'] or 'none (NumPy preprocessing)'}",
        f"zipped {report['zipped_bytes'] / 2**20:.1f} MiB (limit 50 MB), unzipped "
        f"{report['unzipped_bytes'] / 2**20:.1f} MiB (limit 250 MB; untrimmed "
        f"{report['untrimmed_unzipped_bytes'] / 2**20:.1f} MiB)",
        f"{'package':<28}{'before MiB':>12}{'after MiB':>12}",
    ]
    for name in sorted(set(report["per_package_before"]) | set(report["per_package_after"])):
        before = report["per_package_before"].get(name, 0) / 2**20
        after = report["per_package_after"].get(name, 0) / 2**20
        if max(before, after) >= 0.05:
            lines.append(f"{name:<28}{before:>12.1f}{after:>12.1f}")
    lines.append(f"{'removed MiB':>12}  rule")
    lines += [f"{removed / 2**20:>12.1f}  {rule}" for rule, removed in report["trimmed_by_rule"].items()]
    return "\n".join(lines)


def build_parser(full: bool = False) -> argparse.ArgumentParser:
    """Defaults from this mode's artefacts (helpers.paths): quick, or full with --full."""
    parser = argparse.ArgumentParser(description="Build the Lambda deployment zip.")
    parser.add_argument("--arch", default="x86_64", choices=sorted(ARCHITECTURES))
    parser.add_argument("--python", default="3.12", choices=("3.12", "3.13"))
    parser.add_argument("--model", type=Path, help="bundle this ONNX model as model/model.onnx")
    parser.add_argument("--out-dir", type=Path, default=run_artifacts(quick=False if full else None).dist_dir)
    parser.add_argument("--full", action="store_true", help="full mode's dist folder (default: quick, as `make run`)")
    parser.add_argument(
        "--without-kernel", action="store_true", help="leave out the C letterbox kernel (NumPy preprocessing)"
    )
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(full="--full" in argv).parse_args(argv)
    try:
        report = build(args.arch, args.python, args.model, args.out_dir, kernel=not args.without_kernel)
    except (ValueError, RuntimeError, subprocess.CalledProcessError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_report(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
