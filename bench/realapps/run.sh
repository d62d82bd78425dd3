#!/usr/bin/env bash
# Run one real application's own test suite without and with the plugin (after setup.sh).
#
#   bash bench/realapps/run.sh fastapi|allauth|async WORK [outcomes] [counts] [timing] [werror]
#
# Starts the plugin's own PostgreSQL (pg_server.py: TCP on 127.0.0.1, random password,
# pg_stat_statements) for the run and stops it at the end; results go to WORK/results/APP-*.
# Steps (all by default):
#   outcomes  the suite with -p no:migsafe and at the plugin's defaults, --junitxml each,
#             compared test by test (compare_outcomes.py)
#   counts    the suite with --migsafe-report --migsafe-report-json and pss_conftest.py (the
#             server's pg_stat_statements around each test's call phase), compared per test
#             (compare_counts.py, then explain_counts.py). Nothing else may use this server meanwhile (the reset is global).
#   timing    user+sys CPU of off / defaults / report / report-kept, 3 runs each, alternating (time_runs.py)
#   werror    -W error (plus, for allauth and async, ignores of the warnings their suites emit
#             without the plugin), off and defaults, compared test by test
set -euo pipefail
app=$1 work=$(realpath "$2"); shift 2
steps=${*:-outcomes counts timing werror}
here=$(cd "$(dirname "$0")" && pwd) repo=$(cd "$(dirname "$0")/../.." && pwd)
out=$work/results; mkdir -p "$out"
. "$work/venv-$app/bin/activate"
export PYTHONPATH=$here

dbs=(app allauth); [ "$app" = async ] && dbs=(conduit)
rm -f "$work/pg-$app/pg.env"  # a run before left its server's: never read a stale one
python "$here/pg_server.py" "$work/pg-$app" "${dbs[@]}" >"$out/$app-pg.log" 2>&1 &
pg_pid=$!
trap 'kill $pg_pid; wait $pg_pid || true' EXIT
for _ in $(seq 300); do [ -s "$work/pg-$app/pg.env" ] && grep -q TCP "$out/$app-pg.log" && break; sleep 1; done
[ -s "$work/pg-$app/pg.env" ] || { echo "PostgreSQL did not start in 300 s: $out/$app-pg.log" >&2; exit 1; }
. "$work/pg-$app/pg.env"

case $app in
  fastapi)
    cd "$work/fastapi/backend"
    export POSTGRES_DB=app PSS_DBNAME=app
    # the app's prestart (scripts/prestart.sh) and tests-start (scripts/tests-start.sh) steps
    python app/backend_pre_start.py && alembic upgrade head && python app/initial_data.py && python app/tests_pre_start.py
    pytest=(python -m pytest -p no:cacheprovider tests/)
    ;;
  allauth)
    cd "$work/allauth"
    export POSTGRES_DB=allauth PSS_DBNAME=test_allauth
    pytest=(python -m pytest -p no:cacheprovider --ds=allauth_pg_settings tests/)
    ;;
  async)
    cd "$work/async"
    # its settings (app/core/config.py, pydantic-settings) read DB_HOST/PORT/USERNAME/PASSWORD/
    # DATABASE from the environment before .env.testing; URL postgresql+psycopg:// (async engine)
    export DB_HOST=$POSTGRES_SERVER DB_PORT=$POSTGRES_PORT DB_USERNAME=$POSTGRES_USER \
      DB_PASSWORD=$POSTGRES_PASSWORD DB_DATABASE=conduit PSS_DBNAME=conduit
    # its CI's build step (mise.toml) before the tests; tests/conftest.py then create_all()s
    PYTHON_ENVIRONNEMENT=testing alembic upgrade head
    pytest=(python -m pytest -p no:cacheprovider tests/)
    ;;
esac
echo "plugin tree $(git -C "$repo" rev-parse HEAD)$(git -C "$repo" diff --quiet HEAD -- pytest_migsafe || echo ' (with uncommitted changes)')" | tee "$out/$app-rev.txt"

for step in $steps; do
  case $step in
    outcomes)
      "${pytest[@]}" -p no:migsafe -rA --junitxml="$out/$app-off.xml" >"$out/$app-off.txt" 2>&1 || true
      "${pytest[@]}" -rA --junitxml="$out/$app-on.xml" >"$out/$app-on.txt" 2>&1 || true
      python "$here/compare_outcomes.py" "$out/$app-off.xml" "$out/$app-on.xml" | tee "$out/$app-outcomes.txt" || true
      ;;
    counts)
      PSS_OUT="$out/$app-pss.json" "${pytest[@]}" -p pss_conftest -q --migsafe-report \
        --migsafe-report-json="$out/$app-report.json" >"$out/$app-counts-run.txt" 2>&1 || true
      python "$here/compare_counts.py" "$out/$app-report.json" "$out/$app-pss.json" | tee "$out/$app-counts.txt"
      python "$here/explain_counts.py" "$out/$app-report.json" "$out/$app-pss.json" | tee "$out/$app-explain.txt"
      ;;
    timing)
      # bytecode caches on, outside the tree (see time_runs.py)
      PYTHONDONTWRITEBYTECODE= PYTHONPYCACHEPREFIX="$work/pycache-$app" python "$here/time_runs.py" --runs 3 --logs "$out/$app-timing" --json "$out/$app-timing.json" -- "${pytest[@]}" -q | tee "$out/$app-timing.txt"
      ;;
    werror)
      if [ "$app" = fastapi ]; then
        # the template warns (UserWarning) about its default "changethis" secrets and PyJWT about
        # a short HMAC key: a database of its own, with real secrets, as a deployment would have
        python - <<'PY'
import os, psycopg
with psycopg.connect(os.environ["PSS_DSN"], autocommit=True) as c:
    c.execute("DROP DATABASE IF EXISTS app_werr"); c.execute("CREATE DATABASE app_werr")
PY
        export POSTGRES_DB=app_werr
        SECRET_KEY=$(python -c 'import secrets; print(secrets.token_urlsafe(48))')
        FIRST_SUPERUSER_PASSWORD=$(python -c 'import secrets; print(secrets.token_urlsafe(16))')
        export SECRET_KEY FIRST_SUPERUSER_PASSWORD
        alembic upgrade head >/dev/null && python app/initial_data.py >/dev/null 2>&1
        w=(-W error)
      elif [ "$app" = async ]; then
        # no filterwarnings of its own: error, except the two deprecations its suite emits
        # without the plugin (passlib imports crypt; Starlette's HTTP_422_UNPROCESSABLE_ENTITY)
        w=(-W error -W "ignore:'crypt' is deprecated:DeprecationWarning"
           -W "ignore:'HTTP_422_UNPROCESSABLE_ENTITY' is deprecated:DeprecationWarning")
      else
        # allauth has no filterwarnings of its own: error, except each warning its suite (and
        # its dependencies at import) emits without the plugin, as a project would list them
        w=(-W error -W "ignore:defusedxml.cElementTree is deprecated:DeprecationWarning"
           -W "ignore:The default scheme will be changed:django.utils.deprecation.RemovedInDjango60Warning"
           -W "ignore::jwt.warnings.InsecureKeyLengthWarning" -W "ignore:Cannot test provider:UserWarning"
           -W "ignore:Error when trying to teardown test databases:pytest.PytestWarning")
      fi
      "${pytest[@]}" "${w[@]}" -p no:migsafe -rA --junitxml="$out/$app-werr-off.xml" >"$out/$app-werr-off.txt" 2>&1 || true
      "${pytest[@]}" "${w[@]}" -rA --junitxml="$out/$app-werr-on.xml" >"$out/$app-werr-on.txt" 2>&1 || true
      python "$here/compare_outcomes.py" "$out/$app-werr-off.xml" "$out/$app-werr-on.xml" | tee "$out/$app-werr.txt" || true
      ;;
  esac
done
