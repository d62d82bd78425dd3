"""What a pool observation can watch: engines and pools of SQLAlchemy and psycopg_pool,
their names, sizes and capacities, and the hooks that make them report events."""

from __future__ import annotations

import sys
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pytest_migsafe import imports
from pytest_migsafe.pool import events
from pytest_migsafe.pool import psycopg as pool_psycopg
from pytest_migsafe.pool import sqlalchemy as pool_sqlalchemy
from pytest_migsafe.versions import import_if_installed, install_guarded

ACCEPTS = ("a SQLAlchemy Engine, AsyncEngine or Pool, or a psycopg_pool ConnectionPool "
           "or AsyncConnectionPool")


# -- what the observer watches -------------------------------------------------------
def classify(target: Any) -> tuple[str, Any]:
    """``("engine", sync_engine)``, ``("pool", sqlalchemy_pool)`` or ``("psycopg", pool)``.

    Raises TypeError naming what is accepted for anything else.
    """
    kind = pool_sqlalchemy.classify(target) or pool_psycopg.classify(target)
    if kind is None:
        raise TypeError(f"pool_stats() accepts {ACCEPTS}; got {type(target).__name__}")
    return kind


def describe_pool(pool: Any) -> str:
    """A readable pool name: the engine URL (password masked) and pool class, or the psycopg pool name."""
    if pool_psycopg.is_pool(pool):
        return pool_psycopg.name_of(pool)
    return pool_sqlalchemy.name_of(pool)


def configured_size(pool: Any) -> int | None:
    """The configured size: QueuePool ``pool_size``, NullPool 0, psycopg ``max_size``; else None
    (what a pool can open beyond it: :func:`capacity_of`)."""
    if pool_psycopg.is_pool(pool):
        return int(pool.max_size)
    return pool_sqlalchemy.size_of(pool)


@dataclass(frozen=True)
class Capacity:
    """How many connections a pool keeps and how many it can have open at once.

    ``kind``: ``"queue"`` (SQLAlchemy QueuePool, AsyncAdaptedQueuePool), ``"null"`` (NullPool),
    ``"psycopg"`` (psycopg_pool), ``"unknown"`` (a configured size alone, as a run report
    records it). ``size``: connections kept open between checkouts (QueuePool ``pool_size``,
    psycopg_pool ``min_size``, 0 for NullPool), None for no limit (QueuePool ``pool_size=0``).
    ``most``: connections open at once at the most (QueuePool ``pool_size + max_overflow``,
    psycopg_pool ``max_size``), None for no limit (``max_overflow=-1``, ``pool_size=0``,
    NullPool: a new connection per checkout).
    """

    kind: str
    size: int | None
    most: int | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict: ``kind``, ``size``, ``most`` (null for no limit)."""
        return {"kind": self.kind, "size": self.size, "most": self.most}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Capacity:
        """Rebuild from :meth:`to_dict` output."""
        size, most = data.get("size"), data.get("most")
        return cls(str(data.get("kind", "unknown")), None if size is None else int(size),
                   None if most is None else int(most))

    @classmethod
    def of_size(cls, size: int) -> Capacity:
        """What a configured size alone tells (a run report's ``pool_sizes``): 0 is no limit
        (SQLAlchemy's NullPool or ``pool_size=0``; psycopg_pool has no ``max_size`` 0), any other
        size is both kept and the most, burst capacity unknown."""
        return cls("unknown", None, None) if size <= 0 else cls("unknown", size, size)

    def describe(self) -> str:
        """What the pool can hold, in its library's terms: ``pool size 2 (+20 overflow: up to
        22)``, ``pool size 2 (no overflow limit)``, ``min_size 1, max_size 4``, ..."""
        size, most = self.size, self.most
        if self.kind == "null":
            return "NullPool (no limit, keeps none)"
        if self.kind == "psycopg":
            return f"min_size {size}, max_size {most}"
        if size is None:
            return "pool size 0 (no limit)"
        if self.kind == "unknown":
            return f"pool size {size} (its overflow is not recorded)"
        if most is None:
            return f"pool size {size} (no overflow limit)"
        if most == size:
            return f"pool size {size} (no overflow: up to {most})"
        return f"pool size {size} (+{most - size} overflow: up to {most})"


def capacity_of(pool: Any) -> Capacity | None:
    """``pool``'s :class:`Capacity` as its library counts it; None for a pool without a
    configured size (StaticPool, AssertionPool, SingletonThreadPool, other classes).

    SQLAlchemy: ``pool.size() + max_overflow`` for a QueuePool (``max_overflow=-1``, and
    ``pool_size=0``, for which SQLAlchemy sets it, mean no limit); psycopg_pool: ``min_size``
    kept, ``max_size`` at the most.
    """
    if pool_psycopg.is_pool(pool):
        return Capacity("psycopg", int(pool.min_size), int(pool.max_size))
    size = pool_sqlalchemy.size_of(pool)
    if size is None:
        return None
    if not _is_queue_class(type(pool)):
        return Capacity("null", 0, None)  # (size_of sizes QueuePool and NullPool alone)
    if size <= 0:
        return Capacity("queue", None, None)
    overflow = getattr(pool, "_max_overflow", None)  # SQLAlchemy has no public accessor
    if not isinstance(overflow, int):
        return Capacity("unknown", size, size)
    return Capacity("queue", size, None if overflow < 0 else size + overflow)


_queue_classes: dict[type, bool] = {}  # SQLAlchemy pool class -> a QueuePool (AsyncAdaptedQueuePool too)?


def _is_queue_class(cls: type) -> bool:
    """``cls`` is a QueuePool; cached per class (no import on the way: it runs for every observed pool)."""
    known = _queue_classes.get(cls)
    if known is None:
        from sqlalchemy.pool import QueuePool  # (imported: the pool is SQLAlchemy's)

        known = _queue_classes[cls] = issubclass(cls, QueuePool)
    return known


# {pool name: capacity} of the pools pool_facts() described, the last of each name (a pool
# described again after a resize() or dispose() is up to date)
# pool name -> (the pool, weakly; its configured size; its Capacity): worked out once per pool
# and size (a psycopg pool's resize() changes it), not at every test that uses the pool
_capacities: dict[str, tuple[Any, int, Capacity]] = {}


def pool_capacities(names: Iterable[str]) -> dict[str, Capacity]:
    """The :class:`Capacity` of each pool of ``names`` an observation described (those of a
    test's ``pool_sizes``, just read); a name without one is left out."""
    known = _capacities
    return {name: known[name][2] for name in names if name in known}


def pool_facts(pool: Any) -> tuple[str, int | None, str | None]:
    """``(describe_pool(pool), configured_size(pool), server_kind(pool))``, telling the pool's
    library once (what an observation reads of every pool it saw); the pool's
    :class:`Capacity` is kept for :func:`pool_capacities`."""
    size: int | None
    if pool_psycopg.is_pool(pool):
        name, size = pool_psycopg.name_of(pool), int(pool.max_size)
    else:
        name, size = pool_sqlalchemy.name_of(pool), pool_sqlalchemy.size_of(pool)
    if size is not None:
        known = _capacities.get(name)
        if known is None or known[1] != size or known[0]() is not pool:
            capacity = capacity_of(pool)
            if capacity is not None:
                try:
                    _capacities[name] = (weakref.ref(pool), size, capacity)
                except TypeError:  # a pool that cannot be weakly referenced: worked out each time
                    _capacities[name] = (lambda: None, size, capacity)
    return name, size, server_kind(pool)


def server_kind(pool: Any) -> str | None:
    """Where ``pool``'s server is (:mod:`pytest_migsafe.pool.locality`: ``"unix socket"``,
    ``"loopback"``, ``"in-process"``, ``"network"``), None until it opened a connection."""
    try:
        return events.servers.get(pool)
    except TypeError:  # a pool that cannot be weakly referenced
        return None


def install(import_missing: bool = True, just_imported: bool = False) -> None:
    """Install the pool hooks; with ``import_missing=False`` only for drivers already imported.

    Idempotent and cheap once both drivers are hooked. ``just_imported``: as for
    :func:`pytest_migsafe.queries.drivers.install`.
    """
    global _installed_for, _modules_seen
    modules = sys.modules
    if not import_missing and not just_imported and len(modules) == _modules_seen:
        return  # no module imported (or removed) since the last look: the per-test fast path
    seen = len(modules)
    loaded = (modules.get("sqlalchemy"), modules.get("psycopg_pool"), modules.get("sqlalchemy.orm"))
    if loaded == _installed_for and (not import_missing or None not in loaded[:2]):
        _modules_seen = seen
        return  # the same libraries as last time, already hooked
    if import_missing:  # imported here, so that the version check below sees them
        import_if_installed("sqlalchemy", "psycopg_pool")
    install_guarded("sqlalchemy", pool_sqlalchemy.install, import_missing, part="pools",
                    lost="its pools' checkouts, waits and leaks are not measured")
    install_guarded("psycopg_pool", pool_psycopg.install, import_missing)
    # (a library still being imported counts as not loaded: hooked at the end of its import)
    _installed_for = (imports.ready("sqlalchemy"), imports.ready("psycopg_pool"), imports.ready("sqlalchemy.orm"))
    _modules_seen = -1  # (installing may have imported more: look again next time)


_installed_for: tuple[Any, Any, Any] = (False, False, False)
# len(sys.modules) when install(import_missing=False) last found nothing left to hook (see
# pytest_migsafe.queries.drivers: the same look, for the pool libraries)
_modules_seen = -1


def drivers_loaded() -> bool:
    """True once SQLAlchemy or psycopg_pool is imported: before that, no pool can exist."""
    modules = sys.modules
    return "sqlalchemy" in modules or "psycopg_pool" in modules


