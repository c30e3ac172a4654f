"""The detector in the browser (helpers.web): the static folder opens from a plain static file server
and detects; letterbox_kernel.c compiled to WebAssembly gives the runtime's model input bit for bit on
any image size; the page's detections are the handler's on every real image the project ships, for the
tiny detector and for the trained model (helpers.web.parity, in the system's Chromium)."""

import base64
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from helpers.data.dataset import SAMPLE_DIR
from helpers.local.serve import PAGE_DIR, FrontServer
from helpers.runtime.model import Detector
from helpers.runtime.preprocess import preprocess
from helpers.web import build, parity

pytestmark = pytest.mark.slow  # Chromium: the browser lane runs in `make test`, not in `make test-fast`

JPEG = SAMPLE_DIR / "images" / "10.jpg"


@pytest.fixture(scope="module")
def playwright():
    """Playwright with the system's Chromium, and the tools the static folder is built with."""
    module = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra has it)")
    if shutil.which("chromium") is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    if shutil.which("clang") is None or shutil.which("wasm-ld") is None:
        pytest.skip("no clang / wasm-ld for the WASM kernel (Debian: apt-get install clang lld)")
    if not (build.ORT_DIST / build.ORT_FILES[0]).is_file():
        pytest.skip("onnxruntime-web is not installed (make web)")
    with module.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=list(parity.CHROMIUM_FLAGS))
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def tiny(make_tiny_model, tmp_path_factory):
    """The tiny detector (served threshold 0.3) at IR version 8, the trained models' (torch's exporter
    writes it): ONNX Runtime Web 1.31 reads up to 13, and the onnx package writes 14."""
    import onnx

    model = onnx.load(make_tiny_model(0.3))
    model.ir_version = 8
    path = tmp_path_factory.mktemp("tiny-ir8") / "tiny.onnx"
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def folder(playwright, tiny, tmp_path_factory):
    """The static folder built with the tiny detector."""
    return build.build(tiny, tmp_path_factory.mktemp("web") / "web")


@pytest.fixture(scope="module")
def static_url(folder):
    """`python -m http.server` in the folder: a static file server with nothing of the project's behind it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(folder)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(100):
        try:
            urllib.request.urlopen(url, timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(timeout=30)


def test_the_static_folder_opens_from_a_static_server_and_detects_what_the_handler_does(
    playwright, static_url, tiny_handler, lambda_context
):
    from helpers.runtime import handler

    served = handler.handler({"image": base64.b64encode(JPEG.read_bytes()).decode(), "threshold": 0.3}, lambda_context)
    page = playwright.new_page()
    page.goto(static_url)
    page.wait_for_function("document.getElementById('threshold-value').textContent === '0.30'")
    page.set_input_files("#file", str(JPEG))
    page.wait_for_selector("#browser-detections li")
    items = page.eval_on_selector_all(
        "#browser-detections li", "els => els.map(e => [e.dataset.label, +e.dataset.score])"
    )
    assert [label for label, _ in items] == [d["label"] for d in served["detections"]]
    assert np.allclose([s for _, s in items], [d["score"] for d in served["detections"]], atol=1e-4)
    assert page.eval_on_selector("#browser-canvas", "c => [c.width, c.height]") == [499, 666]
    assert page.locator("#browser-timings tr").count() == 5  # decode, letterbox, inference, postprocess, total
    assert page.is_hidden("#lambda-panel")  # no handler behind a static server
    page.close()


def test_a_model_onnxruntime_web_cannot_read_is_one_line_on_the_page(playwright, make_tiny_model, tmp_path):
    """The tiny detector as the onnx package writes it (IR version 14; ONNX Runtime Web 1.31 reads up
    to 13): the page says so in the browser panel instead of failing silently."""
    server = parity.static_server(build.build(make_tiny_model(0.3), tmp_path / "web"))
    page = playwright.new_page()
    try:
        page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
        page.wait_for_function("document.getElementById('browser-error').textContent !== ''")
        assert "Unsupported model IR version: 14" in page.text_content("#browser-error")
        assert page.evaluate("window.fridge") is None
    finally:
        page.close()
        server.shutdown()
        server.server_close()


#: (height, width): shrinks and enlargements in each direction, a side of one pixel, odd sides, the
#: model's own size (no resize), and a long strip.
SIZES = [(666, 499), (150, 113), (1, 1), (1, 700), (700, 1), (384, 384), (383, 385), (1000, 37), (97, 2500), (2, 3)]


def test_the_wasm_kernel_gives_the_runtimes_model_input_bit_for_bit_on_any_size(playwright, static_url, tiny):
    """Random pixels of every size in SIZES through the page's WASM kernel (with the page's own taps and
    geometry) against helpers.runtime.preprocess on the same pixels."""
    config = Detector(tiny).config
    page = playwright.new_page()
    page.goto(static_url)
    page.wait_for_function("window.fridge.then((d) => d !== null)")
    rng = np.random.default_rng(42)
    for height, width in SIZES:
        rgba = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
        tensor = page.evaluate(
            """async ([data, height, width]) => {
              const { letterboxGeometry } = await import("./detector.js");
              const detector = await window.fridge, size = detector.config.image_size;
              const rgba = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
              const geometry = letterboxGeometry(height, width, size);
              const out = detector.kernel.letterbox(rgba, height, width, geometry, size, detector.config.normalise);
              let text = "";
              const bytes = new Uint8Array(out.buffer);
              for (let i = 0; i < bytes.length; i += 32768) text += String.fromCharCode(...bytes.subarray(i, i + 32768));
              return btoa(text);
            }""",
            [base64.b64encode(rgba.tobytes()).decode(), height, width],
        )
        expected, _ = preprocess(rgba[:, :, :3], config)
        got = np.frombuffer(base64.b64decode(tensor), np.float32).reshape(expected.shape)
        assert np.array_equal(got, expected), (height, width)
    page.close()


def test_the_tiny_detector_in_chromium_matches_the_handler_on_every_shipped_image(playwright, tiny):
    """The parity check's own figures on the tiny detector (its five boxes, scores from the image's mean):
    the model input equal, every detection agreeing, the browser's JPEG decode measured against Pillow's."""
    images = parity.shipped_images()
    assert len(images) == 140  # the 6 fridge photos and the 134 object photos
    report = parity.measure(tiny, images, threshold=0.0, browser=playwright)
    summary = report["summary"]
    assert summary["images"] == 140 and summary["tensor_max_abs_diff"] == 0.0
    assert summary["detections_lambda"] == summary["detections_browser"] == 5 * 140
    assert summary["agreeing_fraction"] == 1.0 and summary["unpaired_by_reason"] == {}
    assert all("max" in row["decode"] for row in report["images"])  # same upright size as Pillow's
    assert set(summary["download_bytes"]) == {"page", "onnxruntime", "kernel", "model"}


def test_exif_rotation_png_and_grey_jpeg_decode_in_the_browser_as_pillow_does(playwright, tiny, tmp_path):
    """Beyond the shipped JPEGs: an EXIF-rotated JPEG comes out upright in the shape Pillow gives, a PNG
    decodes to the same pixels exactly, a grey JPEG to three equal channels; the model input is the
    runtime's for each and the detections the handler's."""
    from PIL import Image

    photos = sorted((SAMPLE_DIR / "images").glob("*.jpg"))
    rotated, png, grey = tmp_path / "rotated.jpg", tmp_path / "picture.png", tmp_path / "grey.jpg"
    with Image.open(photos[0]) as image:
        exif = image.getexif()
        exif[0x0112] = 6  # rotate 90 degrees clockwise to show upright
        image.save(rotated, quality=90, exif=exif)
    with Image.open(photos[1]) as image:
        image.save(png)
    with Image.open(photos[2]) as image:
        image.convert("L").save(grey, quality=90)
    report = parity.measure(tiny, [rotated, png, grey], threshold=0.0, browser=playwright)
    rows = {row["image"]: row for row in report["images"]}
    assert rows["rotated.jpg"]["size"] == "666x499"  # upright: the stored 499x666 turned a quarter
    assert all("max" in row["decode"] for row in rows.values())  # Pillow's upright shape each time
    assert rows["picture.png"]["decode"]["max"] == 0
    assert report["summary"]["tensor_max_abs_diff"] == 0.0 and report["summary"]["agreeing_fraction"] == 1.0


def test_the_trained_model_in_chromium_gives_the_handlers_detections(playwright, onnx_model):
    """The real detector: the same model input bit for bit, and at least 99% of the detections paired
    with the handler's at IoU >= 0.99 and score within 0.01, every other one explained."""
    report = parity.measure(onnx_model, parity.shipped_images(), browser=playwright)
    summary = report["summary"]
    print(json.dumps(summary, indent=1))
    assert summary["tensor_max_abs_diff"] == 0.0
    assert summary["agreeing_fraction"] >= 0.99, summary
    assert set(summary["unpaired_by_reason"]) <= {"threshold", "decode", "runtime"}


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.headers["content-type"], answer.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["content-type"], err.read()


@pytest.mark.parametrize("built", [True, False])
def test_serve_serves_the_static_build_or_the_page_alone(built, folder, playwright):
    """`python -m helpers serve`'s front serves the static build's files when there is one (so the page
    also runs the model), the page's own files otherwise, and nothing outside the folder."""
    server = FrontServer(0, None, {"model": "x", "score_threshold": 0.5, "classes": []}, folder if built else PAGE_DIR)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        status, kind, body = _get(url + "/")
        assert status == 200 and kind == "text/html" and b'id="browser-panel"' in body
        assert _get(url + "/config")[0] == 200
        wasm = _get(url + "/ort/ort-wasm-simd-threaded.wasm")
        assert (wasm[0], wasm[1]) == ((200, "application/wasm") if built else (404, "application/json"))
        assert _get(url + "/config.json")[0] == (200 if built else 404)
        assert _get(url + "/../serve.py")[0] == 404
    finally:
        server.shutdown()
        server.server_close()


def test_the_web_command_refuses_a_missing_model_in_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "helpers", "web", "--model", "/nonexistent.onnx"], capture_output=True, text=True
    )
    assert (result.returncode, result.stderr.splitlines()) == (2, ["error: model not found: /nonexistent.onnx"])


def test_onnxruntime_web_is_pinned_exactly_with_every_package_hashed():
    """The page runs exactly the ONNX Runtime Web the parity was measured with: one exact pin in
    web/package.json, resolved in web/package-lock.json with integrity hashes for every package."""
    web = build.PROJECT_ROOT / "web"
    manifest = json.loads((web / "package.json").read_text())
    lock = json.loads((web / "package-lock.json").read_text())
    assert manifest["dependencies"] == {"onnxruntime-web": "1.31.1"}
    assert lock["packages"][""]["dependencies"] == manifest["dependencies"]
    assert lock["packages"]["node_modules/onnxruntime-web"]["version"] == "1.31.1"
    installed = {name: entry for name, entry in lock["packages"].items() if name}
    assert installed and all(entry["integrity"].startswith("sha512-") for entry in installed.values())
