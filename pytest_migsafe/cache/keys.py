"""A cache key's prefix, as the breakdowns and ``min_cache_hit_rate(prefix=...)`` see it.

By default the prefix is the part of the key before the first ``:`` (``user:1`` ->
``user``), after taking off what a framework puts in front of the key it was given:

- **Django's cache framework** (``django.core.cache`` with ``RedisCache``, and
  django-redis, which calls the same key function) stores ``cache.get("user:1")`` under
  ``KEY_PREFIX:VERSION:user:1`` (the default ``KEY_FUNCTION``, ``default_key_func``), so
  with the default ``KEY_PREFIX = ""`` the key is ``:1:user:1``. A key that starts with
  ``:<digits>:`` is read as such a key: its prefix is ``user``. When Django's settings are
  already configured (the module is imported; it is never imported here), each Redis cache
  in ``CACHES`` with the default key function adds its own ``KEY_PREFIX`` (``shop:1:user:1``
  -> ``user``), any ``VERSION``.
- **Anything else** (a custom ``KEY_FUNCTION``, another framework, a namespace of your own):
  name it with a regular expression with a named group ``prefix``, in the ini key
  ``migsafe_cache_key_pattern`` (one per line, tried in order, ``re.search`` on the key
  decoded as UTF-8) or ``cache_stats(client, key_patterns=[...])``. The first pattern that
  matches gives the prefix; a key no pattern matches falls back to the rules above.

:class:`KeyPrefixes` holds one such configuration; :func:`default_prefixes` is the
process's default (the plugin sets it from the ini key at start-up with
:func:`set_default_patterns`). Prefixes are ``str``; bytes keys are decoded as UTF-8 with
replacement.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from pytest_migsafe.django_settings import configured_setting

_DJANGO_DEFAULT = re.compile(r"^:\d+:(?P<rest>.*)\Z", re.DOTALL)  # KEY_PREFIX "" and any VERSION
_DEFAULT_KEY_FUNCTIONS = (None, "", "django.core.cache.backends.base.default_key_func")
_DJANGO_REDIS_BACKENDS = ("django.core.cache.backends.redis.RedisCache", "django_redis.cache.RedisCache")


class KeyPatternError(ValueError):
    """A key pattern that does not compile, or has no named group ``prefix``."""


def compile_patterns(patterns: Iterable[str | re.Pattern[str]]) -> list[re.Pattern[str]]:
    """Compile user key patterns (``str`` or ``re.Pattern``). Raises :class:`KeyPatternError`
    naming the pattern when one does not compile or lacks a named group ``prefix``."""
    compiled = []
    for pattern in patterns:
        try:
            regex = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern)
        except re.error as exc:
            raise KeyPatternError(f"key pattern {pattern!r} is not a regular expression: {exc}") from None
        if "prefix" not in regex.groupindex:
            raise KeyPatternError(f"key pattern {regex.pattern!r} has no named group 'prefix', "
                                  r"e.g. '^shop:\d+:(?P<prefix>[^:]+)'")
        compiled.append(regex)
    return compiled


def django_key_prefixes() -> list[str]:
    """The ``KEY_PREFIX`` of each Redis cache in Django's ``CACHES`` that uses the default key
    function, when Django is imported and its settings are configured; else ``[]``. Never
    imports Django and never raises."""
    caches = configured_setting("CACHES", {})
    if not isinstance(caches, dict):
        return []
    prefixes = []
    for options in caches.values():
        if not isinstance(options, dict) or options.get("BACKEND") not in _DJANGO_REDIS_BACKENDS:
            continue
        if options.get("KEY_FUNCTION") not in _DEFAULT_KEY_FUNCTIONS:
            continue
        prefix = str(options.get("KEY_PREFIX") or "")
        if prefix and prefix not in prefixes:
            prefixes.append(prefix)
    return prefixes


def _text(key: Any) -> str:
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key).decode("utf-8", "replace")
    return str(key)


class KeyPrefixes:
    """How to find a key's prefix: user patterns first, then Django's key format, then the
    part before the first ``:`` (see the module docstring).

    ``patterns``: regular expressions (``str`` or compiled) with a named group ``prefix``;
    ``django``: also read Django's ``CACHES`` (``KEY_PREFIX`` of its Redis caches) once
    Django's settings are configured. Raises :class:`KeyPatternError` for a bad pattern.
    """

    def __init__(self, patterns: Sequence[str | re.Pattern[str]] = (), *, django: bool = True) -> None:
        self.patterns = compile_patterns(patterns)
        self.django = django
        self._django_names: list[str] | None = None  # None until Django's settings could be read
        self._django_regexes: list[re.Pattern[str]] = []

    def _framework(self) -> list[re.Pattern[str]]:
        if self._django_names is None and self.django:
            conf = sys.modules.get("django.conf")
            if conf is None:
                return []
            try:
                configured = bool(conf.settings.configured)
            except Exception:
                configured = False
            if not configured:
                return []
            self._django_names = django_key_prefixes()
            self._django_regexes = [re.compile(rf"^{re.escape(name)}:\d+:(?P<rest>.*)\Z", re.DOTALL)
                                    for name in self._django_names]
        return self._django_regexes

    def plain(self) -> bool:
        """True when only the default rules apply now: no user pattern and no Django
        ``KEY_PREFIX`` (so a key that does not start with ``:`` has the part before its first
        ``:`` as its prefix). Reads Django's settings if they are configured."""
        return not self.patterns and not self._framework()

    def prefix(self, key: Any) -> str:
        """The prefix of ``key`` (``str`` or ``bytes``) as ``str``. Never raises."""
        found = self.raw(key)
        return found.decode("utf-8", "replace") if isinstance(found, bytes) else str(found)

    def raw(self, key: Any) -> Any:
        """The prefix of ``key`` as :meth:`prefix` finds it, left as ``bytes`` for a bytes key
        when no pattern or framework applies (the hot path: decoded later, once per prefix)."""
        if not self.patterns and not self._django_regexes and (
                self._django_names is not None or "django.conf" not in sys.modules or not self._framework()):
            if isinstance(key, bytes):
                if not key.startswith(b":"):
                    return key.partition(b":")[0]
            elif isinstance(key, str) and not key.startswith(":"):
                return key.partition(":")[0]
        return self._find(_text(key))

    def _find(self, text: str) -> str:
        for regex in self.patterns:
            match = regex.search(text)
            if match is not None and match.group("prefix") is not None:
                return match.group("prefix")
        for regex in (*self._framework(), _DJANGO_DEFAULT):
            match = regex.match(text)
            if match is not None:
                text = match.group("rest")
                break
        return text.partition(":")[0]

    def describe(self) -> str:
        """One line naming the rules in force, for messages: the user patterns, the Django
        ``KEY_PREFIX`` es read, and the default."""
        self._framework()
        parts = [f"pattern {regex.pattern!r}" for regex in self.patterns]
        if self._django_names:
            parts.append("Django KEY_PREFIX " + ", ".join(repr(name) for name in self._django_names))
        parts.append("Django's ':<version>:' key format, then the part before the first ':'")
        return "; ".join(parts)


_default = KeyPrefixes()


def default_prefixes() -> KeyPrefixes:
    """The process's default :class:`KeyPrefixes` (the ini key's patterns once the plugin set
    them, else none)."""
    return _default


def set_default_patterns(patterns: Sequence[str | re.Pattern[str]]) -> KeyPrefixes:
    """Make ``patterns`` (see :class:`KeyPrefixes`) the default and return it. Raises
    :class:`KeyPatternError` for a bad pattern (the default is then unchanged)."""
    global _default
    _default = KeyPrefixes(patterns)
    return _default
