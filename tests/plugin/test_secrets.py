"""No password in the reprs and messages of the plugin's own objects (the servers' are in tests/servers)."""

from __future__ import annotations

import redis

from pytest_migsafe.cli.cache import _clean
from pytest_migsafe.plugin.cache import RedisEndpoint


def test_the_redis_endpoint_repr_masks_its_password() -> None:
    endpoint = RedisEndpoint("redis", "redis://:secretpw@127.0.0.1:6379/0", "URL")
    assert "secretpw" not in repr(endpoint)
    assert "127.0.0.1:6379" in repr(endpoint)


def test_a_one_letter_password_is_masked_where_it_stands_not_everywhere() -> None:
    url = "redis://:e@127.0.0.1:1/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        text = _clean(exc, url)
    else:  # pragma: no cover - nothing listens on port 1
        raise AssertionError("expected a connection error")
    assert "***ction" not in text and "conn" in text.lower(), text
