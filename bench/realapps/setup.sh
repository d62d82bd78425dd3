#!/usr/bin/env bash
# Lay out one real application from a local git snapshot and install it in its own venv,
# with this project's tree installed editable (so a run always tests the current tree).
#
#   bash bench/realapps/setup.sh fastapi|allauth|async GIT_DIR WORK
#
# GIT_DIR: a clone (or bare mirror) of fastapi/full-stack-fastapi-template,
# pennersr/django-allauth or adr1enbe4udou1n/fastapi-realworld-example-app (async); nothing
# is downloaded from GitHub. WORK: a scratch directory
# outside this repository (e.g. /work/realapps); the application goes to WORK/APP and its
# venv to WORK/venv-APP. Dependencies come from PyPI. Needs python3.11+ (3.10 works too).
set -euo pipefail
app=$1 git_dir=$2 work=$(realpath -m "$3")
here=$(cd "$(dirname "$0")" && pwd) repo=$(cd "$(dirname "$0")/../.." && pwd)
python=${PYTHON:-python3}
case $app in
  # the last commit before the template moved to Python 3.14 (pyproject: requires-python >=3.10;
  # settings from POSTGRES_SERVER/PORT/USER/PASSWORD/DB)
  fastapi) commit=a727535488542228dc19b13f217a104ad317c122 ;;
  allauth) commit=20f4bded2fd2e12d0d172d1321626a94c17ac97e ;;
  # the last commit before the app moved to Python 3.14 syntax (its pyproject says >=3.13, but
  # nothing in it needs more than 3.11: ruff's target is py311); async SQLAlchemy on psycopg 3
  async) commit=8fc2a33b1e1c372fb622974eaab2d025bd12a43f ;;
  *) echo "usage: $0 fastapi|allauth|async GIT_DIR WORK" >&2; exit 2 ;;
esac
mkdir -p "$work/$app"
git --git-dir="$git_dir" archive "$commit" | tar -x -C "$work/$app"
"$python" -m venv "$work/venv-$app"
pip="$work/venv-$app/bin/pip"
"$pip" install -q -U pip
case $app in
  fastapi)
    (cd "$work/fastapi/backend" && "$pip" install -q -e . 'pytest>=7.4.3,<10' coverage) ;;
  allauth)
    # what its noxfile installs for the test session (Django 5.2 LTS), with psycopg 3 (it
    # comes with the plugin) instead of psycopg2; the package's own extras bring the rest.
    # The checkout has no .git, so setuptools-scm is told the version; the installed copy
    # is removed again so that allauth is imported from the checkout, as in its CI.
    (cd "$work/allauth" && SETUPTOOLS_SCM_PRETEND_VERSION_FOR_DJANGO_ALLAUTH=65.16.1 "$pip" install -q \
      'django~=5.2.0' 'pytest>=8.3.5,<9' pytest-asyncio==1.3.0 'pytest-django>=4.11,<5' 'Pillow>=9.0' \
      'pyyaml>=6.0.2,<7' 'djangorestframework>=3.15.2,<4' 'django-ninja>=1.3.0,<2' \
      '.[mfa,openid,socialaccount,steam,headless,idp-oidc]')
    "$pip" uninstall -q -y django-allauth ;;
  async)
    # its dependencies and dev group at the versions of its uv.lock (the project is not a
    # package: uv runs it from the checkout); the plugin below lifts psycopg-pool to >=3.3
    "$pip" install -q 'fastapi==0.117.1' 'uvicorn[standard]==0.37.0' 'python-jose[cryptography]==3.5.0' \
      'passlib[bcrypt]==1.7.4' 'bcrypt==4.3.0' 'alembic==1.16.5' 'python-slugify==8.0.4' \
      'pydantic[email]==2.11.9' 'requests==2.32.5' 'httpx==0.28.1' 'sqlalchemy==2.0.43' \
      'pydantic-settings==2.11.0' 'psycopg[binary,pool]==3.2.10' 'faker==37.8.0' \
      'anyio==4.11.0' 'pytest==8.4.2' 'pytest-asyncio==1.2.0' ;;
esac
"$pip" install -q -e "$repo[postgres]"  # (pg_server.py starts the embedded PostgreSQL through psycopg)
echo "$app at $commit in $work/$app, venv $work/venv-$app, plugin from $repo"
