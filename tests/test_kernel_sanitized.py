"""The letterbox kernel against the NumPy path on any array layout and contract, and the same run on a
build with AddressSanitizer and UBSan (no out-of-bounds read or write, no undefined behaviour).

Run as a script (`python tests/test_kernel_sanitized.py KERNEL.so`), it checks that library instead of the
development build: the sanitized build needs libasan loaded first, so it runs in its own process."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.build import native
from helpers.runtime import kernel
from helpers.runtime import preprocess as pp
from helpers.runtime.config import PreprocessConfig

LAYOUTS = ("packed", "rgbx", "flip_rows", "flip_columns", "rotate_180", "transpose", "grey", "row_padding")


def _layout(rgbx: np.ndarray, layout: str) -> np.ndarray:
    """An (H, W, 3) uint8 view of a fresh (H, W, 4) array, with the strides `layout` names."""
    rgb = rgbx[:, :, :3]
    views = {
        "packed": lambda: np.ascontiguousarray(rgb),
        "rgbx": lambda: rgb,
        "flip_rows": lambda: rgb[::-1],
        "flip_columns": lambda: rgb[:, ::-1],
        "rotate_180": lambda: rgb[::-1, ::-1],
        "transpose": lambda: rgb.transpose(1, 0, 2),
        "grey": lambda: np.broadcast_to(rgbx[:, :, :1], rgb.shape),
        "row_padding": lambda: rgb[:, : max(1, rgb.shape[1] - 1)],
    }
    return views[layout]()


def check_kernel_equals_numpy(max_examples: int) -> int:
    """Hypothesis over sizes, layouts and contracts (sizes other than 384, other mean/std/pad): the kernel
    (kernel.load_kernel(), whichever build KERNEL_PATH names) gives the NumPy path's tensor. Returns the number
    of examples run."""
    assert kernel.load_kernel() is not None, f"no kernel at {kernel.KERNEL_PATH}"
    examples = []
    channel = st.floats(0.0, 1.0, width=32)

    @settings(max_examples=max_examples, deadline=None, database=None)
    @given(
        height=st.integers(1, 300),
        width=st.integers(1, 300),
        layout=st.sampled_from(LAYOUTS),
        size=st.integers(1, 500),
        mean=st.tuples(channel, channel, channel),
        std=st.tuples(*[st.floats(0.0625, 1.0, width=32)] * 3),
        pad_fill=st.tuples(*[st.integers(0, 255)] * 3),
        seed=st.integers(0, 2**32 - 1),
    )
    def kernel_equals_numpy(height, width, layout, size, mean, std, pad_fill, seed):
        rgbx = np.random.default_rng(seed).integers(0, 256, (height, width, 4), dtype=np.uint8)
        image = _layout(rgbx, layout)
        config = PreprocessConfig(image_size=size, mean=mean, std=std, pad_fill=pad_fill)
        ours, geometry = pp.preprocess(image, config)
        expected, _ = pp.preprocess_numpy(image, config)
        assert ours.shape == (1, 3, size, size)
        assert np.array_equal(ours, expected), (image.shape, image.strides, geometry)
        examples.append(1)

    kernel_equals_numpy()
    return len(examples)


def test_kernel_equals_numpy_on_any_layout_and_contract():
    assert check_kernel_equals_numpy(60) > 0


def _sanitizer_runtime() -> str:
    """libasan's path, for LD_PRELOAD, or skip where the compiler has no sanitizer runtime."""
    compiler = native.compiler_for(native.host_arch())
    found = subprocess.run([compiler, "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(found) or not Path(found).exists():
        pytest.skip(f"{compiler} has no AddressSanitizer runtime (libasan.so; Debian: libasan8)")
    return found


@pytest.mark.slow
def test_kernel_under_address_and_undefined_behaviour_sanitizers(tmp_path):
    libasan = _sanitizer_runtime()
    library = native.build(tmp_path / "kernel-sanitized.so", sanitize=True)
    env = {
        **os.environ,
        "LD_PRELOAD": libasan,
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:exitcode=86",  # CPython's own allocations are not leaks
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=87",
    }
    completed = subprocess.run(
        [sys.executable, __file__, str(library)], capture_output=True, text=True, env=env, timeout=1200
    )
    report = completed.stdout + completed.stderr
    assert completed.returncode == 0 and "Sanitizer" not in report, report[-4000:]
    assert completed.stdout.strip() == "200 examples, no sanitizer report", report[-4000:]


if __name__ == "__main__":
    kernel.KERNEL_PATH = Path(sys.argv[1])
    kernel.load_kernel.cache_clear()
    print(f"{check_kernel_equals_numpy(200)} examples, no sanitizer report")
