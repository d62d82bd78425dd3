"""django-allauth's own ``regular`` test project, on PostgreSQL instead of in-memory SQLite.

Use with ``--ds=allauth_pg_settings`` (``bench/realapps`` on ``PYTHONPATH``, run from the
django-allauth checkout). Everything is the project's ``tests.projects.regular.settings``
except ``DATABASES``, read from ``POSTGRES_SERVER``, ``POSTGRES_PORT``, ``POSTGRES_USER``,
``POSTGRES_PASSWORD`` and ``POSTGRES_DB`` (pytest-django creates ``test_<POSTGRES_DB>``).
Django picks psycopg 3, which the plugin instruments.
"""

import os

from tests.projects.regular.settings import *  # noqa: F403

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ["POSTGRES_DB"],
        "USER": os.environ["POSTGRES_USER"],
        "PASSWORD": os.environ.get("POSTGRES_PASSWORD", ""),
        "HOST": os.environ["POSTGRES_SERVER"],
        "PORT": os.environ["POSTGRES_PORT"],
    }
}
