"""Read one of Django's settings the way every part of migsafe must: never importing Django,
never configuring it, never raising.

Django's ``settings`` is a lazy object: reading a setting before the project configured it
evaluates ``DJANGO_SETTINGS_MODULE`` (or raises ``ImproperlyConfigured``). migsafe reads a
setting only when ``django.conf`` is already imported and its settings are configured.
"""

from __future__ import annotations

import re
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


def settings_location(setting: str) -> tuple[str, int] | None:
    """``(file, line)`` of the first line assigning ``setting`` in the settings module Django was
    configured from (``DJANGO_SETTINGS_MODULE``; line 1 when no line assigns it), for a message
    about that setting to point at; None when Django's settings are not configured from a
    module (``settings.configure()``), or its file cannot be read."""
    module_name = configured_setting("SETTINGS_MODULE")
    module = sys.modules.get(module_name) if isinstance(module_name, str) else None
    filename = getattr(module, "__file__", None)
    if not isinstance(filename, str):
        return None
    assignment = re.compile(rf"\s*{re.escape(setting)}\s*(?::[^=]*)?=")  # DATABASES = / DATABASES: dict = ...
    try:
        with open(filename, encoding="utf-8", errors="replace") as source:
            for number, line in enumerate(source, 1):
                if assignment.match(line):
                    return filename, number
    except OSError:
        return None
    return filename, 1  # (set elsewhere: from .base import *)
