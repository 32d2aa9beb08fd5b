"""Frozen dataclasses that cost one generated method at import instead of six (CLI start-up, issue 14).

``@dataclass(frozen=True)`` writes six methods per class from source text through ``exec``
(``__init__``, ``__repr__``, ``__eq__``, ``__hash__``, ``__setattr__``, ``__delattr__``): about 0.5 ms a
class on Python 3.11, so the codecs' records and exchange events (28 classes) cost ~12 ms at every start of
every command.
:func:`frozen_dataclass` keeps them dataclasses (``fields()``, ``asdict()``, ``replace()``, ``match`` work)
but lets the dataclass machinery write only ``__init__``; :class:`Frozen`, their base, has the other five,
written once and with the behaviour ``frozen=True`` gives: equal when the class and every compared field are
equal, hashed on those fields, ``Name(field=value, ...)`` as repr, and each field set once (by
``__init__``), never reassigned nor deleted (:class:`dataclasses.FrozenInstanceError`).

Written here because nothing does it for 3.11: attrs generates its methods the same way, and Python 3.13
only batches the ``exec`` calls. Classes with ``__slots__`` (``Frame``) keep ``@dataclass(frozen=True)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import FrozenInstanceError, dataclass, fields
from typing import Any, TypeVar

T = TypeVar("T")


class Frozen:
    """Base of :func:`frozen_dataclass` classes: the methods ``@dataclass(frozen=True)`` would write."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        # __init__ sets every field once; a second assignment (or a name that is no field) is a mutation
        if name in self.__dict__ or name not in self.__dataclass_fields__:  # type: ignore[attr-defined]
            raise FrozenInstanceError(f"cannot assign to field {name!r}")
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def _compared(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f.name) for f in fields(self) if f.compare)  # type: ignore[arg-type]

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return self._compared() == other._compared()  # type: ignore[attr-defined,no-any-return]
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._compared())

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr)  # type: ignore[arg-type]
        return f"{self.__class__.__qualname__}({shown})"


#: ``@frozen_dataclass`` on a subclass of :class:`Frozen`: a frozen dataclass whose only generated method
#: is ``__init__``
frozen_dataclass: Callable[[type[T]], type[T]] = dataclass(eq=False, repr=False)
