"""CI cannot skip its hardest checks: with HELPERS_STRICT_SKIPS=1 (set by .ci/run) a skipped test fails."""

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
CONFTEST = Path(__file__).with_name("conftest.py").read_text()


@pytest.mark.slow  # inner pytest runs
@pytest.mark.parametrize("strict, outcome", [("1", {"failed": 1}), ("", {"skipped": 1})])
def test_a_skip_fails_only_where_skips_are_strict(pytester, monkeypatch, strict, outcome):
    monkeypatch.setenv("HELPERS_STRICT_SKIPS", strict)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile("import pytest\n\ndef test_needs_a_tool():\n    pytest.skip('no such tool here')\n")
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(**outcome)
    if strict:
        result.stdout.fnmatch_lines(["*skipped where it must run (HELPERS_STRICT_SKIPS=1): *no such tool here*"])
