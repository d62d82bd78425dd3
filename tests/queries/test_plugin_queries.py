"""The query side of the plugin, run in-process through pytester."""

from __future__ import annotations

import json

import pytest

SQLITE_APP = """
import pytest
from sqlalchemy import create_engine, text

engine = create_engine("sqlite://")

def run(n, sql="SELECT :i"):
    with engine.connect() as conn:
        for i in range(n):
            conn.execute(text(sql), {"i": i})
"""


@pytest.fixture
def app(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(app=SQLITE_APP)
    return pytester


def test_max_queries_marker_passes_within_budget_and_fails_over_it(app: pytest.Pytester) -> None:
    app.makepyfile(test_budget="""
        import pytest
        from app import run

        @pytest.mark.max_queries(3)
        def test_within():
            run(3)

        @pytest.mark.max_queries(2)
        def test_over():
            run(2)
            run(3, "SELECT * FROM (SELECT :i) AS t")
    """)
    result = app.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*max_queries: expected at most 2 queries, 5 ran*",
        "*SELECT * FROM (SELECT ?) AS t x3 at app.py:9*",
        "*SELECT ? x2 at app.py:9*",
    ])


def test_max_queries_match_restricts_what_counts(app: pytest.Pytester) -> None:
    app.makepyfile(test_match="""
        import pytest
        from app import run

        @pytest.mark.max_queries(1, match="FROM")
        def test_only_from_counts():
            run(5)
            run(1, "SELECT * FROM (SELECT :i) AS t")
    """)
    app.runpytest().assert_outcomes(passed=1)


@pytest.mark.parametrize("args", ["-1", '"five"', "", "1, 2", "3, bogus=1", "2, match='('"])
def test_bad_max_queries_marker_is_a_collection_error(app: pytest.Pytester, args: str) -> None:
    app.makepyfile(test_bad=f"""
        import pytest

        @pytest.mark.max_queries({args})
        def test_x():
            pass

        def test_other():
            pass
    """)
    result = app.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_bad.py::test_x: @pytest.mark.max_queries:*"])
    assert "passed" not in result.stdout.str()


def test_bad_threshold_is_a_collection_error(app: pytest.Pytester) -> None:
    app.makepyfile(test_bad="""
        import pytest

        @pytest.mark.no_n_plus_one(threshold=0)
        def test_x():
            pass
    """)
    result = app.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_x: @pytest.mark.no_n_plus_one: threshold expects a whole number >= 2*"])


def test_bad_threshold_option_is_rejected_before_tests_run(app: pytest.Pytester) -> None:
    app.makepyfile(test_ok="def test_x(): pass")
    result = app.runpytest("--migsafe-n-plus-one-threshold=0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--migsafe-n-plus-one-threshold*expected a whole number >= 2*"])


def test_n_plus_one_is_a_warning_by_default_and_a_failure_with_the_marker(app: pytest.Pytester) -> None:
    app.makepyfile(test_n1="""
        import pytest
        from app import run

        def test_warns():
            run(10)

        @pytest.mark.no_n_plus_one
        def test_fails():
            run(10)

        @pytest.mark.no_n_plus_one
        def test_below_threshold():
            run(9)
    """)
    result = app.runpytest()
    result.assert_outcomes(passed=2, failed=1, warnings=1)
    result.stdout.fnmatch_lines([
        "*NPlusOneWarning: N+1 suspected: a statement repeated 10 times from one function (threshold 10)",
        "*  SELECT ?",
        "*  at app.py:9",
    ])
    result.stdout.fnmatch_lines(["FAILED test_n1.py::test_fails - Failed: N+1 suspected*"])


def test_n_plus_one_threshold_from_ini(app: pytest.Pytester) -> None:
    app.makeini("[pytest]\nmigsafe_n_plus_one_threshold = 3\n")
    app.makepyfile(test_n1="""
        import pytest
        from app import run

        @pytest.mark.no_n_plus_one
        def test_fails():
            run(3)
    """)
    app.runpytest().assert_outcomes(failed=1)


def test_allow_list_names_the_shape_and_the_repeats(app: pytest.Pytester) -> None:
    app.makepyfile(test_allow="""
        import re
        import pytest
        from app import run

        @pytest.mark.no_n_plus_one
        @pytest.mark.allow_n_plus_one("SELECT ?", 12)
        def test_allowed():
            run(12)

        @pytest.mark.no_n_plus_one
        @pytest.mark.allow_n_plus_one(re.compile("^SELECT"), 11)
        def test_more_than_allowed():
            run(12)
    """)
    app.runpytest().assert_outcomes(passed=1, failed=1)


def test_assert_fixtures_fail_with_the_budget_message(app: pytest.Pytester) -> None:
    app.makepyfile(test_fixtures="""
        from app import run

        def test_max(assert_max_queries):
            with assert_max_queries(2):
                run(3)

        def test_exact(assert_num_queries):
            with assert_num_queries(2):
                run(1)

        def test_ok(assert_num_queries, assert_max_queries):
            with assert_num_queries(2), assert_max_queries(2):
                run(2)
    """)
    result = app.runpytest()
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines([
        "*assert_max_queries: expected at most 2 queries, 3 ran*",
        "*assert_num_queries: expected exactly 2 queries, 1 ran*",
    ])


def test_statements_outside_the_call_phase_do_not_count(app: pytest.Pytester) -> None:
    app.makepyfile(test_phase="""
        import pytest
        from app import run

        @pytest.fixture
        def seeded():
            run(50)
            yield
            run(50)

        @pytest.mark.max_queries(1)
        def test_x(seeded):
            run(1)
    """)
    app.runpytest().assert_outcomes(passed=1)


def test_markers_are_documented(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines([
        "*max_queries(n, *, match=None, ignore=None, using=None)*",
        "*no_n_plus_one(threshold=None)*",
        "*allow_n_plus_one(shape, max_repeats)*",
    ])


def test_help_lists_the_options(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*migsafe*", "*--migsafe-postgres-url=URL*", "*--migsafe-capture-params*"])


def test_migsafe_db_rolls_back_commits_between_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_db="""
        from sqlalchemy import text

        def test_a_creates_and_commits(migsafe_db):
            migsafe_db.execute(text("CREATE TABLE iso_t (a int)"))
            migsafe_db.execute(text("INSERT INTO iso_t VALUES (1)"))
            migsafe_db.commit()
            assert migsafe_db.execute(text("SELECT count(*) FROM iso_t")).scalar() == 1

        def test_b_sees_nothing(migsafe_db):
            assert migsafe_db.execute(text("SELECT to_regclass('iso_t')")).scalar() is None
    """)
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=2)


def test_scaling_check_names_the_shape_that_grew(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_scale="""
        from sqlalchemy import text

        def make(db):
            db.execute(text("CREATE TABLE IF NOT EXISTS sc_users (id int)"))

        def test_grows(migsafe_db, assert_constant_queries):
            make(migsafe_db)
            def setup(n):
                for i in range(n):
                    migsafe_db.execute(text("INSERT INTO sc_users VALUES (:i)"), {"i": i})
            def action():
                ids = migsafe_db.execute(text("SELECT id FROM sc_users")).scalars().all()
                for i in ids:
                    migsafe_db.execute(text("SELECT :i AS detail"), {"i": i})
            assert_constant_queries(setup, action, scale=(2, 3))

        def test_constant(migsafe_db, assert_constant_queries):
            make(migsafe_db)
            def setup(n):
                for i in range(n):
                    migsafe_db.execute(text("INSERT INTO sc_users VALUES (:i)"), {"i": i})
            assert_constant_queries(setup, lambda: migsafe_db.execute(text("SELECT id FROM sc_users")).all())

        def test_slope_allows_known_growth(migsafe_db, assert_constant_queries):
            make(migsafe_db)
            def setup(n):
                for i in range(n):
                    migsafe_db.execute(text("INSERT INTO sc_users VALUES (:i)"), {"i": i})
            def action():
                for i in migsafe_db.execute(text("SELECT id FROM sc_users")).scalars().all():
                    migsafe_db.execute(text("SELECT :i AS detail"), {"i": i})
            assert_constant_queries(setup, action, scale=(2, 4), slope=1)
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=2, failed=1)
    output = result.stdout.str()
    assert "query count grows with the data: scale [2, 3] ran [3, 4] statements" in output
    assert "SELECT ? AS detail: 2 != 3" in output


def test_unreachable_postgres_url_is_a_clear_error_with_the_password_masked(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MIGSAFE_POSTGRES_URL")
    pytester.makepyfile(test_pg="def test_x(migsafe_postgres): pass")
    result = pytester.runpytest("--migsafe-postgres-url=postgresql://app:hunter2@127.0.0.1:1/app")
    result.assert_outcomes(errors=1)
    output = result.stdout.str()
    assert "cannot connect to PostgreSQL at postgresql://app:***@127.0.0.1:1/app" in output
    assert "app:***@127.0.0.1:1/app" in output
    assert "hunter2" not in output
    assert "Traceback" not in output


def test_a_marker_typo_close_to_a_migsafe_marker_is_a_warning_naming_the_right_one(app: pytest.Pytester) -> None:
    app.makepyfile(test_typo="""
        import pytest
        from app import run

        @pytest.mark.max_query(1)
        def test_typo():
            run(3)

        @pytest.mark.migsafe_max_querie(1)
        def test_typo_of_the_migsafe_name():
            run(3)
    """)
    result = app.runpytest()
    result.assert_outcomes(passed=2)  # a notice, never a failure
    result.stdout.fnmatch_lines(["*@pytest.mark.max_query (on test_typo.py::test_typo) is not a marker migsafe "
                                 "knows: did you mean @pytest.mark.max_queries?*"])
    result.stdout.fnmatch_lines(["*@pytest.mark.migsafe_max_querie (on test_typo.py::test_typo_of_the_migsafe_name) "
                                 "is not a marker migsafe knows: did you mean @pytest.mark.migsafe_max_queries?*"])


def test_an_allow_rule_that_matched_no_suspect_is_a_warning(app: pytest.Pytester) -> None:
    app.makepyfile(test_unused="""
        import pytest
        from app import run

        @pytest.mark.allow_n_plus_one("SELECT ... FROM addresses", 12)
        def test_unused_rule():
            run(12)
    """)
    result = app.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*allow_n_plus_one('SELECT ... FROM addresses', 12) matched no N+1 suspect of "
                                 "test_unused.py::test_unused_rule*"])


def test_a_test_method_inherited_from_a_module_not_named_like_a_test_is_the_tests_own_code(
        app: pytest.Pytester) -> None:
    """A shared base class of test methods (``tests/base.py``, a mixin module) holds test code:
    its loop of statements is the test's own arrangement, not an N+1 of the application."""
    app.makepyfile(checks_base="""
        from sqlalchemy import text
        from app import engine

        class SharedChecks:
            def test_inserts_rows_one_by_one(self):
                with engine.connect() as conn:
                    for i in range(15):
                        conn.execute(text("SELECT :i"), {"i": i})
    """)
    app.makepyfile(test_inherits="""
        from checks_base import SharedChecks

        class TestInherited(SharedChecks):
            pass
    """)
    result = app.runpytest("-p", "no:randomly", "-W", "error::UserWarning")
    result.assert_outcomes(passed=1)
    assert "N+1" not in result.stdout.str()


def test_call_sites_stay_relative_to_where_pytest_started_after_a_test_changes_directory(
        pytester: pytest.Pytester) -> None:
    """A test that moves to another directory and never comes back (django-oscar's suite has
    one): the files first seen after it were shown by absolute paths, those seen before by
    relative ones, so one application showed its sites two ways (and a baseline's call sites
    changed with the test order)."""
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    loop = ("import sqlalchemy as sa\n\ndef lookups(conn):\n    for i in range(10):\n"
            "        conn.execute(sa.text('SELECT :i AS v'), {'i': i})\n")
    pytester.makepyfile(shop_a=loop, shop_b=loop.replace("AS v", "AS w"), test_moves="""
        import os
        import sqlalchemy as sa

        engine = sa.create_engine("sqlite://")

        def test_1_before():
            import shop_a
            with engine.connect() as conn:
                shop_a.lookups(conn)

        def test_2_moves_away(tmp_path):
            os.chdir(tmp_path)  # never changed back

        def test_3_after():
            import shop_b
            with engine.connect() as conn:
                shop_b.lookups(conn)
        """)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "--migsafe-report-json=run.json")
    result.assert_outcomes(passed=3)
    report = json.loads((pytester.path / "run.json").read_text())
    sites = {nodeid.rsplit("::", 1)[1]: record["queries"]["n_plus_one"][0]["call_site"]
             for nodeid, record in report["tests"].items() if record.get("queries")}
    assert sites == {"test_1_before": "shop_a.py:5", "test_3_after": "shop_b.py:5"}
    result.stdout.fnmatch_lines(["*at shop_b.py:5"])


def test_helpers_in_a_test_directory_are_test_code_however_they_are_named(pytester: pytest.Pytester) -> None:
    """Ten requests made one per line by a helper in tests/helpers.py (or a factory in a test kit
    the application ships) were one application function's loop: three suspects (django-oscar:
    a third of its suspects), where the same lines in conftest.py or in the test gave none."""
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\npythonpath = . tests\n")
    pytester.makepyfile(app="""
        import sqlalchemy as sa

        engine = sa.create_engine("sqlite://")

        def handle_request(path):
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1 AS user_id"))
                conn.execute(sa.text("SELECT 2 AS setting"))
            return path

        def per_row(n):
            with engine.connect() as conn:
                for i in range(n):
                    conn.execute(sa.text("SELECT :i AS row"), {"i": i})
        """)
    requests = "\n".join(f"    app.handle_request('/page/{n}/')" for n in range(10))
    (pytester.path / "tests").mkdir()
    (pytester.path / "tests" / "helpers.py").write_text(f"import app\n\ndef checkout_flow():\n{requests}\n")
    kit = pytester.path / "app_kit" / "test"
    kit.mkdir(parents=True)
    (kit / "factories.py").write_text(f"import app\n\ndef make_pages():\n{requests}\n")
    (pytester.path / "tests" / "test_flow.py").write_text(
        "import app\nfrom helpers import checkout_flow\nfrom app_kit.test.factories import make_pages\n\n"
        "def test_helper():\n    checkout_flow()\n\n"
        "def test_kit():\n    make_pages()\n\n"
        "def test_application_loop():\n    app.per_row(10)\n")
    result = pytester.runpytest_subprocess("-p", "no:randomly", "--migsafe-report-json=run.json")
    result.assert_outcomes(passed=3)
    suspects = {nodeid.rsplit("::", 1)[1]: len(record["queries"]["n_plus_one"])
                for nodeid, record in json.loads((pytester.path / "run.json").read_text())["tests"].items()}
    assert suspects == {"test_helper": 0, "test_kit": 0, "test_application_loop": 1}
    # by file name alone (the setting empty): the helpers' lines are one application function's loop again
    result = pytester.runpytest_subprocess("-p", "no:randomly", "--migsafe-report-json=run.json",
                                           "-o", "migsafe_test_dirs=")
    suspects = {nodeid.rsplit("::", 1)[1]: len(record["queries"]["n_plus_one"])
                for nodeid, record in json.loads((pytester.path / "run.json").read_text())["tests"].items()}
    assert suspects == {"test_helper": 2, "test_kit": 2, "test_application_loop": 1}


def test_a_repeated_statement_suspect_has_its_fix_in_the_json_and_its_lines_in_number_order(
        pytester: pytest.Pytester) -> None:
    """The warning printed a fix for a repeated statement while the JSON's suspect had "fix":
    null; its lines were listed as text sorts them (app.py:10 before app.py:8)."""
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    sends = "".join("    conn.execute(sa.text('SELECT :i AS v'), {'i': 1})\n" for _ in range(10))
    (pytester.path / "app.py").write_text(
        "import sqlalchemy as sa\n\nengine = sa.create_engine('sqlite://')\n\n\ndef spread(conn):\n" + sends
        + "\n\ndef inserts(conn):\n    conn.execute(sa.text('CREATE TABLE t (n INT)'))\n"
        "    for i in range(10):\n        conn.execute(sa.text('INSERT INTO t VALUES (:i)'), {'i': i})\n")
    pytester.makepyfile(test_app="""
        import app

        def test_spread():
            with app.engine.connect() as conn:
                app.spread(conn)

        def test_inserts():
            with app.engine.connect() as conn:
                app.inserts(conn)
        """)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "--migsafe-report-json=run.json")
    result.assert_outcomes(passed=2)
    tests = json.loads((pytester.path / "run.json").read_text())["tests"]
    (insert,) = tests["test_app.py::test_inserts"]["queries"]["n_plus_one"]
    assert insert["kind"] == "repeated_statement" and insert["fix"].startswith("insert the rows in one statement")
    (spread,) = tests["test_app.py::test_spread"]["queries"]["n_plus_one"]
    assert spread["fix"] and f"fix: {spread['fix']}" in result.stdout.str()  # the warning's own
    lines = [int(site.rpartition(":")[2]) for site in spread["chain"][0].split(", ")]
    assert lines == sorted(lines) and len(lines) == 10 and lines[-1] >= 10 > lines[0], spread["chain"]
