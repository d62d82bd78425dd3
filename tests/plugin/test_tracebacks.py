"""The plugin's hook wrappers stay out of the user's tracebacks: an error in a fixture's set-up
shows the user's frames, as without the plugin, never a frame of ``pytest_migsafe``.

(A test item that is not a Python function keeps every frame of its call in its traceback,
pluggy's and every plugin's hook wrappers included: pytest filters none for such items, so
``__tracebackhide__`` cannot take the plugin's out there.)"""

from __future__ import annotations

import pytest

# the fixture in a conftest (in the test's own module, pytest's cut at the module hides pluggy's
# frames and the plugin's alike)
FAILING_FIXTURE = """
import pytest

@pytest.fixture
def broken():
    raise ValueError("the fixture's own error")
"""


@pytest.mark.parametrize("style", ["long", "short", "auto"])
def test_a_fixture_error_shows_no_frame_of_the_plugin(pytester: pytest.Pytester, style: str) -> None:
    pytester.makeconftest(FAILING_FIXTURE)
    pytester.makepyfile(test_fixture="def test_uses_it(broken):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider", f"--tb={style}")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*the fixture's own error*"])
    assert "pytest_migsafe" not in result.stdout.str()

