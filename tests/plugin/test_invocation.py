"""A path option in the space form must not silently move pytest's rootdir."""

from __future__ import annotations

import pytest


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A project whose ini decides what is collected: a run that misses the ini collects nothing."""
    pytester.makeini("[pytest]\npython_files = check_*.py\n")
    pytester.makepyfile(check_app="def test_runs():\n    pass\n")
    return pytester


@pytest.mark.parametrize("option", ["--migsafe-report-json", "--migsafe-baseline"])
def test_an_existing_path_outside_the_project_in_the_space_form_is_a_usage_error(
        project: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory, option: str) -> None:
    outside = tmp_path_factory.mktemp("outside") / "migsafe.json"
    outside.write_text("{}")
    result = project.runpytest_subprocess(option, str(outside))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    # the ini key is offered only where the option has one (--migsafe-report-json has none)
    instead = f", or set ini migsafe_baseline = {outside}" if option == "--migsafe-baseline" else ""
    result.stderr.fnmatch_lines([f"*migsafe: {option} {outside}: pytest took * for a test path*"
                                 f"did not read {project.path / 'tox.ini'}*"
                                 f"Write {option}={outside} (with '='){instead}."])


def test_the_space_form_in_pytest_addopts_is_a_usage_error_too(
        project: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """pytest puts PYTEST_ADDOPTS before the command line when it looks for its rootdir."""
    outside = tmp_path_factory.mktemp("outside") / "migsafe.json"
    outside.write_text("{}")
    monkeypatch.setenv("PYTEST_ADDOPTS", f"-o asyncio_default_fixture_loop_scope=function "
                                         f"--migsafe-report-json {outside}")
    result = project.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*migsafe: --migsafe-report-json {outside} (in PYTEST_ADDOPTS): pytest took *"
                                 f"Write --migsafe-report-json={outside} (with '=')."])


def test_the_equals_form_keeps_the_project_ini(project: pytest.Pytester,
                                               tmp_path_factory: pytest.TempPathFactory) -> None:
    outside = tmp_path_factory.mktemp("outside") / "migsafe.json"
    outside.write_text("{}")
    result = project.runpytest_subprocess(f"--migsafe-report-json={outside}")
    result.assert_outcomes(passed=1)


def test_the_space_form_with_a_path_that_moves_nothing_still_works(project: pytest.Pytester) -> None:
    (project.path / "reports").mkdir()
    (project.path / "reports" / "migsafe.json").write_text("{}")
    result = project.runpytest_subprocess("--migsafe-report-json", "reports/migsafe.json")
    result.assert_outcomes(passed=1)


def test_every_part_registers_in_order_and_a_blocked_part_is_left_out(pytester: pytest.Pytester) -> None:
    """The entry module registers its parts itself (pytest_plugins would make pytest 9 scan
    every installed distribution's entry points once per part): all of them, in order, and
    ``-p no:PART`` leaves one out as it would with ``pytest_plugins``."""
    from pytest_migsafe.plugin import PARTS

    pytester.makeconftest("""
        def pytest_configure(config):
            names = [name for name, plugin in config.pluginmanager.list_name_plugin() if plugin is not None]
            print("parts:", [name for name in names if name.startswith("pytest_migsafe.plugin.")])
    """)
    pytester.makepyfile(test_uses_shadow="def test_lab(shadow):\n    assert shadow.run('x', lambda: 1, lambda: 1) == 1\n")
    result = pytester.runpytest_subprocess("-s", "-p", "no:randomly")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"parts: {list(PARTS)}"])
    blocked = pytester.runpytest_subprocess("-s", "-p", "no:randomly", "-p", "no:pytest_migsafe.plugin.shadow")
    blocked.assert_outcomes(errors=1)  # the shadow fixture is that part's
    blocked.stdout.fnmatch_lines([f"parts: {[name for name in PARTS if not name.endswith('.shadow')]}",
                                  "*fixture 'shadow' not found*"])
