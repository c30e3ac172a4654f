"""Peak memory of decoding and preprocessing the largest images accepted, one fresh process per image.

The budget: a 2048 MB Lambda holds the runtime, the model and ONNX Runtime's arena, so one request may
grow the process by at most 300 MB (peak RSS, over a warm request with a small image). Each image is
40 MP (the pixel limit) in one of the modes Pillow opens, a multi-frame file, or at the WebP limit."""

import io
import subprocess
import sys
import textwrap

import pytest
from PIL import Image

from helpers.runtime import decode, errors
from helpers.runtime.config import MAX_IMAGE_PIXELS

BUDGET_MB = 300
WIDTH, HEIGHT = 8000, 5000  # 40 MP

#: Runs in a fresh interpreter: a warm request, then the image at argv[1]; prints the growth in MB. The
#: peak is VmHWM, the new process's own: ru_maxrss keeps the parent's peak across fork and exec.
MEASURE = textwrap.dedent(
    """
    import io, sys
    from PIL import Image
    from helpers.runtime import decode
    from helpers.runtime import preprocess as pp

    def peak_mb():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024

    warm = io.BytesIO()
    Image.new("RGB", (640, 480), (10, 20, 30)).save(warm, "JPEG")
    pp.preprocess(decode.decode_for_model(warm.getvalue()))
    data = open(sys.argv[1], "rb").read()
    before = peak_mb()
    pp.preprocess(decode.decode_for_model(data))
    print(round(peak_mb() - before))
    """
)


def _grey(size=(WIDTH, HEIGHT), angle=0) -> Image.Image:
    """A gradient (compresses to a few hundred KB at 40 MP, and is quick to make)."""
    gradient = Image.linear_gradient("L")
    return (gradient.rotate(angle) if angle else gradient).resize(size, Image.Resampling.NEAREST)


def _rgb(size=(WIDTH, HEIGHT)) -> Image.Image:
    return Image.merge("RGB", [_grey(size), _grey(size, 90), _grey(size, 180)])


def _rgba(size=(WIDTH, HEIGHT)) -> Image.Image:
    return Image.merge("RGBA", [*_rgb(size).split(), _grey(size, 270)])


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _frames(count: int, size=(2000, 2000)) -> list[Image.Image]:
    first = _rgb(size).quantize(64)
    return [first] + [first.point(lambda v, i=i: (v + i) % 64) for i in range(1, count)]


def _rotated_png() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(_rgb(), "PNG", exif=exif)


WEBP_SIDE = (4000, 2500)  # 10 MP, the WebP limit (decode._WEBP_COST)
IMAGES = {
    "RGB": lambda: _encode(_rgb(), "PNG"),
    "RGBA": lambda: _encode(_rgba(), "PNG"),
    "LA": lambda: _encode(Image.merge("LA", [_grey(), _grey(angle=90)]), "PNG"),
    "P with transparency": lambda: _encode(_rgb().quantize(64), "PNG", transparency=3),
    "L": lambda: _encode(_grey(), "PNG"),
    "I;16": lambda: _encode(_grey().convert("I").point(lambda v: v * 257).convert("I;16"), "PNG"),
    "I": lambda: _encode(_grey().convert("I").point(lambda v: v * 257), "TIFF", compression="tiff_adobe_deflate"),
    "F": lambda: _encode(_grey().convert("F"), "TIFF", compression="tiff_adobe_deflate"),
    "CMYK": lambda: _encode(_rgb().convert("CMYK"), "TIFF", compression="tiff_adobe_deflate"),
    "1": lambda: _encode(_grey().convert("1"), "PNG"),
    "RGB, EXIF rotated": _rotated_png,
    "GIF, 60 frames": lambda: _encode(_frames(60)[0], "GIF", save_all=True, append_images=_frames(60)[1:]),
    "TIFF, 3 pages": lambda: _encode(
        _rgb(), "TIFF", save_all=True, append_images=[_rgb(), _rgb()], compression="tiff_adobe_deflate"
    ),
    "WebP RGBA, 3 frames": lambda: _encode(
        _rgba(WEBP_SIDE), "WEBP", save_all=True, append_images=[_rgba(WEBP_SIDE)] * 2, quality=50, method=0
    ),
}
FAST = ("RGBA",)  # the first case: in `make test-fast`; the rest are `slow`


def _growth_mb(path) -> int:
    completed = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, check=True, timeout=300
    )
    return int(completed.stdout.strip())


@pytest.mark.parametrize(
    "name", [name if name in FAST else pytest.param(name, marks=pytest.mark.slow) for name in IMAGES]
)
def test_the_largest_images_stay_within_the_memory_budget(name, tmp_path):
    path = tmp_path / "image"
    path.write_bytes(IMAGES[name]())
    with Image.open(path) as image:
        assert image.width * image.height in (MAX_IMAGE_PIXELS, MAX_IMAGE_PIXELS // decode._WEBP_COST, 2000 * 2000)
    growth = _growth_mb(path)
    print(f"{name}: peak RSS growth {growth} MB")
    assert growth <= BUDGET_MB, f"{name}: {growth} MB"


@pytest.mark.parametrize("size", [(1, 39_000_000), (39_000_000, 1)])
def test_strips_too_thin_for_the_model_are_refused_before_decoding(size, tmp_path):
    """Pillow keeps an 8-byte pointer per row: decoding 1 x 39M would cost 312 MB before any pixel."""
    with pytest.raises(errors.ImageError, match="a side more than 768 times the other"):
        decode.decode_for_model(_encode(Image.new("L", size), "PNG"))


def test_webp_above_its_limit_is_refused_before_decoding():
    data = _encode(Image.new("RGB", (4000, 2501)), "WEBP", quality=50, method=0)
    with pytest.raises(errors.ImageTooLarge, match="limit for WebP 10000000"):
        decode.decode_for_model(data)
