"""The codecs' records and events (``daly.frozen``) behave exactly as ``@dataclass(frozen=True)`` would.

They are built with one generated method instead of six (start-up time, issue 14); each class is compared
with a real frozen dataclass of the same name and fields: repr, equality, hash, and that no field can be
reassigned or deleted after ``__init__``.
"""

from __future__ import annotations

import dataclasses

import pytest

from trackingbms.daly import exchange, poll, records, snapshot
from trackingbms.daly.frozen import Frozen, frozen_dataclass

CLASSES = sorted(
    {
        obj
        for module in (records, exchange, poll, snapshot)
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, Frozen) and obj is not Frozen
    },
    key=lambda c: c.__qualname__,
)


def reference(cls: type) -> type:
    """A real ``@dataclass(frozen=True)`` with the fields of ``cls``."""
    specs = [(f.name, object, dataclasses.field(default=None)) for f in dataclasses.fields(cls)]
    return dataclasses.make_dataclass(cls.__name__, specs, frozen=True)


def test_every_record_and_event_class_is_checked() -> None:
    names = {c.__name__ for c in CLASSES}
    assert {"Record", "PackStatus", "CellVoltages", "TextRecord", "Send", "Failed", "Command"} <= names
    assert len(CLASSES) == 28


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_behaves_as_a_frozen_dataclass(cls: type) -> None:
    ref = reference(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {name: i + 1 for i, name in enumerate(names)}
    other = {**values, names[-1]: -1}
    a, b, c = cls(**values), cls(**values), cls(**other)
    ra, rb, rc = ref(**values), ref(**values), ref(**other)

    assert dataclasses.is_dataclass(a) and dataclasses.asdict(a) == dataclasses.asdict(ra)
    assert repr(a) == repr(ra).replace(ref.__qualname__, cls.__qualname__, 1)
    assert (a == b, a != b, a == c, a != c) == (ra == rb, ra != rb, ra == rc, ra != rc)
    assert hash(a) == hash(b) == hash(ra)
    # another class is never equal, even with equal fields (a subclass neither: dataclass compares classes)
    twin = frozen_dataclass(type("Twin", (cls,), {}))
    assert a != tuple(values.values()) and a != ra and a != twin(**values) and twin(**values) != a
    assert dataclasses.replace(a, **{names[-1]: -1}) == c

    for obj in (a, ra):
        with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field"):
            setattr(obj, names[0], 99)
        with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'extra'"):
            obj.extra = 1  # type: ignore[attr-defined]
        with pytest.raises(dataclasses.FrozenInstanceError, match="cannot delete field"):
            delattr(obj, names[0])
    assert getattr(a, names[0]) == 1


def test_unhashable_fields_make_an_unhashable_record() -> None:
    # a frozen dataclass with a list field raises on hash(): so must these (not hash by identity)
    with pytest.raises(TypeError, match="unhashable type: 'list'"):
        hash(records.Balancing(0x97, [1, 2]))
