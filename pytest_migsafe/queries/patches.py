"""Attributes migsafe replaced on classes and modules it does not own, to put back."""

from __future__ import annotations

from typing import Any


class Patches:
    """The ``(owner, name, original)`` of each attribute set with :meth:`set`, in order;
    :meth:`undo` puts them back, last first (benchmarks and tests: the plugin never does)."""

    def __init__(self) -> None:
        self._undo: list[tuple[Any, str, Any]] = []

    def set(self, owner: Any, name: str, value: Any, original: Any) -> None:
        """Set ``owner.name`` to ``value``, remembering ``original`` (its own value) to put back."""
        setattr(owner, name, value)
        self._undo.append((owner, name, original))

    def undo(self) -> None:
        """Put every attribute back, last set first."""
        while self._undo:
            owner, name, original = self._undo.pop()
            setattr(owner, name, original)
