"""healthchecks' settings for pytest-django: hc.settings plus what its own test runner
(hc.api.tests.CustomRunner, settings.TEST_RUNNER of `manage.py test`) sets before the run."""
from hc.settings import *  # noqa: F403

PASSWORD_HASHERS = ("django.contrib.auth.hashers.MD5PasswordHasher",)
BLOCKING_EMAILS = True
MAILERS = {
    "default": {
        "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "OPTIONS": {},
    },
}
