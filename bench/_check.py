"""The benchmarks' exit status: a script names its targets and calls :func:`check_targets` after printing
its figures; the run exits 1 when a target is missed (one line per miss on stderr), unless ``--no-check``
(measure only). A quiet run can so be used as a check:

    from _check import Target, add_check_argument, check_targets
    add_check_argument(parser)
    ...print the figures as before...
    check_targets([Target("sqlite samples/s", rate, ">=", 20_000)], check=not args.no_check)

Scripts are run as ``python bench/x.py``, so this module is found beside them.
"""

from __future__ import annotations

import argparse
import operator
import sys
from dataclasses import dataclass

_OPS = {">=": operator.ge, "<=": operator.le, "<": operator.lt}


@dataclass(frozen=True)
class Target:
    name: str
    value: float | None  # None: not measured (counts as missed)
    op: str  # ">=", "<=" or "<"
    limit: float

    @property
    def met(self) -> bool:
        return self.value is not None and bool(_OPS[self.op](self.value, self.limit))

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "value": self.value,
            "target": f"{self.op} {self.limit:g}",
            "met": self.met,
        }


def add_check_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-check", action="store_true", help="only measure: exit 0 even when a target is missed"
    )


def check_targets(targets: list[Target], *, check: bool) -> None:
    """Tell every missed target on stderr; exit 1 if one is missed and ``check``."""
    missed = [t for t in targets if not t.met]
    for t in missed:
        print(f"target missed: {t.name} = {t.value}, want {t.op} {t.limit:g}", file=sys.stderr)
    if missed and check:
        sys.exit(1)
