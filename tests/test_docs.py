"""The Markdown docs stay true: README is a front page within its size, every relative link resolves,
the two commands are the Makefile's, and docs/api.md's response example and status table are the
handler's own (run on the tiny detector: no training)."""

import base64
import json
import re
from pathlib import Path

from helpers.runtime import errors
from helpers.runtime import handler as h

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
API = ROOT / "docs" / "api.md"
PAGES = [README, ROOT / "ARCHITECTURE.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]
README_LIMIT = 15_360  # bytes: a front page, the rest in docs/

#: [text](target) and ![alt](target); the target up to a space (an optional "title") or the parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def test_readme_is_a_front_page():
    assert README.stat().st_size <= README_LIMIT, f"README.md is {README.stat().st_size} bytes; move detail into docs/"


def test_every_relative_link_points_to_an_existing_file():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL or an anchor in the same page
            path = target.split("#", 1)[0]
            if not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_readme_gives_the_makefiles_two_commands():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("run", "test"):
        assert re.search(rf"^{target}:", makefile, re.M), f"the Makefile has no `{target}` target"
        assert re.search(rf"^make {target}\s+#", README.read_text(), re.M), f"README does not give `make {target}`"


def test_readme_has_one_serving_block_for_the_benchmark_to_rewrite():
    text = README.read_text()
    start, end = "<!-- benchmark:serving:start -->", "<!-- benchmark:serving:end -->"
    assert text.count(start) == text.count(end) == 1
    assert text.index(start) < text.index(end)


def _shape(value):
    """The keys and types of a JSON value, recursively; a list's items must all have one shape."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        shapes = [_shape(item) for item in value]
        assert all(s == shapes[0] for s in shapes), f"a list of mixed shapes: {value}"
        return [shapes[0]] if shapes else []
    return type(value).__name__


def _documented_response() -> dict:
    text = API.read_text()
    block = re.search(r"<!-- example:response -->\s*```json\n(.*?)```", text, re.S)
    assert block, "docs/api.md has no ```json block after <!-- example:response -->"
    return json.loads(block.group(1))


def test_the_documented_response_has_the_handlers_keys_and_types(tiny_handler, sample_jpegs, lambda_context):
    answer = h.handler({"image": base64.b64encode(sample_jpegs["10.jpg"]).decode()}, lambda_context)
    real = json.loads(json.dumps(answer))  # as the caller receives it
    assert real["detections"], "the tiny detector answers every box at threshold 0"
    assert _shape(_documented_response()) == _shape(real)


def test_the_documented_error_shape_and_every_status(tiny_handler, lambda_context):
    answer = h.handler({"image": base64.b64encode(b"not an image").decode()}, lambda_context)
    assert set(answer) == {"statusCode", "error", "request_id"} and answer["statusCode"] == 400
    text = API.read_text()
    assert '{"error": "<message>", "request_id": "..."}' in text
    documented = {int(s) for s in re.findall(r"^\| (\d{3}) \|", text, re.M)}
    assert documented == set(errors.STATUS.values()) | {500}
    for cls in errors.STATUS:
        assert f"`{cls.__name__}`" in text, f"docs/api.md does not name {cls.__name__}"
