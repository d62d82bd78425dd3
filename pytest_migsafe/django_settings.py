"""Read one of Django's settings the way every part of migsafe must: never importing Django,
never configuring it, never raising.

Django's ``settings`` is a lazy object: reading a setting before the project configured it
evaluates ``DJANGO_SETTINGS_MODULE`` (or raises ``ImproperlyConfigured``). migsafe reads a
setting only when ``django.conf`` is already imported and its settings are configured.
"""

from __future__ import annotations

import sys
from typing import Any


def configured_setting(name: str, default: Any = None) -> Any:
    """The value of Django setting ``name`` (``DATABASES``, ``CACHES``), or ``default``: Django
    not imported, its settings not configured, the setting missing or empty, or settings
    that raise when read (a half set-up project: not migsafe's to report)."""
    conf = sys.modules.get("django.conf")
    if conf is None:
        return default
    try:
        settings = conf.settings
        if not settings.configured:
            return default
        return getattr(settings, name, None) or default
    except Exception:
        return default
