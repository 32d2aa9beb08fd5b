"""Mutation score of the modules whose bugs lose data or mis-read a battery (mutmut 3, run outside CI).

Each target is run in its own scratch copy of ``src/``, ``tests/`` and ``pyproject.toml`` (with a generated
``[tool.mutmut]`` section), so the work tree never holds mutated code and each target gets only its own
fast test files. The score of a module = mutants killed (a test failed, or it timed out) / mutants
checked; "no tests" and "survived" both count against it. Not counted: equivalent mutants, i.e. those that
only change the case of an SQL string (SQL keywords are case-insensitive) or match a rule of
:data:`EQUIVALENT` (each found by reading a survivor, each with the reason no test can tell it apart), and
logging calls (not mutated: log text is not behaviour). A run cut short reports the score of the mutants
checked so far, with ``"partial": true``.

Caches filled at import or on first use survive into every mutant (mutmut forks each one from a process
that already ran the tests): the guarding tests start them cold (see tests/server/test_packing_exact.py).

    pip install -e '.[mutation]'
    python bench/mutation.py --json                      # every target (slow: tens of minutes on 2 cores)
    python bench/mutation.py --json --target daly        # one target
    python bench/mutation.py --json --survivors          # also list the survivors and the equivalents (why)
    python bench/mutation.py --json --rerun-survivors    # after adding tests: re-check only the survivors

Exit status: 1 when a module scores under the target (85 %), unless ``--no-check``.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _check import Target, add_check_argument, check_targets

ROOT = Path(__file__).resolve().parent.parent
TARGET_SCORE_PCT = 85.0

#: target name → (modules to mutate, the fast test files that guard them)
TARGETS: dict[str, tuple[list[str], list[str]]] = {
    "daly": (
        ["src/trackingbms/daly/a5.py", "src/trackingbms/daly/records.py", "src/trackingbms/daly/poll.py"],
        # the exact, fast files first (no hypothesis, no I/O); the hypothesis properties
        # (test_parser_properties.py, ~30 s a run) are left out: too slow per mutant
        [
            "tests/daly/test_a5_exact.py",
            "tests/daly/test_records_exact.py",
            "tests/daly/test_poll_exact.py",
            "tests/daly/test_records.py",
            "tests/daly/test_reference_frames.py",
        ],
    ),
    "gateway.queue": (
        ["src/trackingbms/gateway/queue.py"],
        ["tests/gateway/test_queue_exact.py", "tests/gateway/test_queue.py"],
    ),
    # the exact file alone: test_packing.py's hypothesis round trips (300 examples each, ~45 s a run) are
    # too slow per mutant; the exact file rebuilds the blob with struct and names every refusal
    "server.packing": (["src/trackingbms/server/store/packing.py"], ["tests/server/test_packing_exact.py"]),
    # the ingest service on a real SQLite store, without HTTP (test_ingest.py's route tests start a server and
    # log users in: ~10 s each, too slow per mutant)
    "server.ingest": (
        ["src/trackingbms/server/store/ingest.py", "src/trackingbms/server/ingest.py"],
        ["tests/server/test_ingest_store.py"],
    ),
}

KILLED = {"killed", "timeout", "caught by type check", "segfault"}

#: SQL is case-insensitive: a mutant that only changes the case of an SQL string is equivalent, not a survivor
_SQL = re.compile(
    r"\b(SELECT|INSERT|UPDATE|DELETE|PRAGMA|CONFLICT|WHERE|VALUES|BEGIN|COMMIT|ROLLBACK|AND|ORDER BY|LIMIT"
    r"|RETURNING)\b"
)
#: log text is not behaviour: logging calls are not mutated
DO_NOT_MUTATE = [r"\blog\.(debug|info|warning|error|exception)\("]


def _functions(mutated_source: Path) -> dict[str, ast.AST]:
    tree = ast.parse(mutated_source.read_text())
    return {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


@dataclass(frozen=True)
class Same:
    """A mutation proven not to change behaviour: in ``function`` (``*`` = any), the one changed line is the
    original with ``before`` replaced by one of ``after``. Matched on the source text, not on mutmut's
    mutant numbers (those shift whenever the code changes)."""

    function: str
    before: str
    after: tuple[str, ...]
    why: str
    #: when set, the line above the changed one must contain it (tells identical lines apart)
    above: str = ""


CHUNKS = "every id still falls in some chunk: the same rows change, only slower"

#: the equivalent mutants found by reading every survivor; each says why no test can tell them apart
EQUIVALENT: tuple[Same, ...] = (
    Same("*", ", 'big')", (")",), "int.to_bytes / from_bytes default to byteorder 'big' since Python 3.11"),
    Same("*", ".decode('ascii'", (".decode('ASCII'",), "codec names are case-insensitive"),
    Same(
        "decode_thresholds",
        ", strict=True)",
        (", strict=False)", ", strict=None)", ")"),
        "4 names for 4 u16 / 8 names for the 8 payload bytes (_check): the lengths are equal by construction",
    ),
    Same("_ascii", "split(b'\\x00', 1)", ("split(b'\\x00')", "split(b'\\x00', 2)"), "only piece 0 is used"),
    Same(
        "fields",
        "d.pop('missing_frames', None)",
        ("d.pop('missing_frames')",),
        "always a list: the key is there",
    ),
    Same(
        "current_from_raw",
        "/ 10, 1)",
        ("/ 10, 2)",),
        "an integer / 10 has one decimal: rounding to 2 is the same",
    ),
    Same("assemble", "p[1:8]", ("p[1:9]",), "a frame's payload is 8 bytes: the slice ends at 8 either way"),
    Same(
        "decode_frames",
        "data_id == 150 else None",
        ("data_id == 150 or True else None",),
        "only 0x95 / 0x96 take a count: assemble ignores it for the text replies",
    ),
    Same("_inner_reply", "undecided = False", ("undecided = None",), "only its truth is read"),
    Same("_inner_reply", "return 1", ("return 2",), "the caller reads only its truth"),
    Same("_inner_reply", "return -1 if", ("return -2 if",), "the caller reads only its sign"),
    Same(
        "_inner_reply",
        "continue",
        ("break",),
        "the buffer ends before this header: it ends before every later one too",
        above="if len(buf) <= k + 3:",
    ),
    Same(
        "_inner_reply",
        "continue",
        ("break",),
        "this reply is not complete yet: no later one can be",
        above="undecided = True",
    ),
    Same(
        "aclose",
        "shutdown(wait=False)",
        ("shutdown(wait=None)", "shutdown(wait=True)"),
        "the worker has just run _close_db: there is nothing left to wait for",
    ),
    *(
        Same(f, f"range(0, len({v}), _CHUNK)", ("range(0, _CHUNK)", f"range(0, len({v}))"), CHUNKS)
        for f, v in (("fetch", "picked"), ("enforce_budget", "drop"))
    ),
    Same(
        "enforce_budget",
        "n_oldest = max(2, unsent // 4)",
        ("n_oldest = max(3, unsent // 4)",),
        "of the oldest 2 or 3, every other one is the same single row",
    ),
    Same(
        "enforce_budget",
        "if used <= self.budget_bytes:",
        ("if used < self.budget_bytes:",),
        "at exactly the budget the same test after the checkpoint ends the pass (one checkpoint more)",
    ),
    Same(
        "disk_used_bytes", "wal = 0", ("wal = None", "wal = 1"), "unreachable: WAL mode keeps the -wal file"
    ),
    Same(
        "settle",
        "range(0, len(ids), _CHUNK)",
        ("range(0, _CHUNK)", "range(0, len(ids))"),
        "every id still falls in some chunk: the same rows change, only slower",
    ),
    Same(
        "*",
        "format_ts(datetime.now(UTC)",
        ("format_ts(datetime.now(None)", "format_ts(datetime.now()"),
        "a naive now() is local time and format_ts converts local time to UTC: the same instant",
    ),
    Same(
        "_cached",
        "st = cache.get(n)",
        ("st = None", "st = cache.get(None)"),
        "a cache miss builds the same struct from its format (only slower)",
    ),
    Same(
        "validate_and_pack",
        "scalar = _SCALARS.get(mask)",
        ("scalar = None", "scalar = _SCALARS.get(None)"),
        "a cache miss builds the same struct from its format (only slower)",
    ),
    Same(
        "validate_and_pack",
        "min(bal) >= 1 and (max(bal) <= 255)",
        (
            "min(bal) > 1 and (max(bal) <= 255)",
            "min(bal) >= 2 and (max(bal) <= 255)",
            "min(bal) >= 1 and (max(bal) < 255)",
        ),
        "the fast check only decides whether the loop looks for a bad element; the loop accepts these too",
    ),
    Same(
        "*",
        ".get(n) or _cached(",
        (".get(None) or _cached(",),
        "a cache miss builds the same struct from its format (only slower)",
    ),
    *(
        Same(
            f,
            f"SampleError('{m}')",
            tuple(f"SampleError({r})" for r in ("None", f"'XX{m}XX'", f"'{m.upper()}'")),
            "unreachable: the loop above raises for every list the fast path refuses",
        )
        for f, m in (("_pack_cells", "cells_mv: invalid"), ("_pack_temps", "temps_c: invalid"))
    ),
    Same(
        "ms_to_ts",
        "fromtimestamp(ts_ms / 1000, UTC)",
        ("fromtimestamp(ts_ms / 1000, None)", "fromtimestamp(ts_ms / 1000)"),
        "naive local time (fromtimestamp sets its fold), made UTC again by format_ts: the same instant",
    ),
    Same(
        "parse_ts_ms",
        "dt.astimezone(UTC)",
        ("dt.astimezone(None)", "dt.astimezone()"),
        "timestamp() and microsecond of an aware time do not depend on the zone it is shown in",
    ),
    Same("unpack", "_HDR.unpack_from(data, 0)", ("_HDR.unpack_from(data)",), "offset 0 is the default"),
    Same(
        "_scalar_struct",
        "('B' if mask & 960",
        ("('b' if mask & 960",),
        "the flags byte holds 4 bits: as signed or unsigned it is the same byte",
    ),
    Same(
        "unpack",
        "off += 2 + n",
        ("off = 2 + n", "off -= 2 + n", "off += 2 - n", "off += 3 + n"),
        "errors is the last field: the offset after it is never read",
        above="out['errors'] = orjson.loads(",
    ),
    Same(
        "unpack",
        "data[off + 2:off + 2 + n]",
        ("data[off + 2:off + 3 + n]",),
        "errors is the last field: a slice past its end stops at the end of the data",
    ),
    Same(
        "unpack",
        "n = _U16.unpack_from(data, off)[0]",
        ("n = _U16.unpack_from(data)[0]",),
        "reads the mask instead, >= 32768 whenever errors (<= 4096 bytes, the last field) are there:"
        " the slice still ends at the end of the data",
        above="if mask & B_ERRORS:",
    ),
    Same(
        "store_samples",
        "batteries.c.tenant_id == device.tenant_id, batteries.c.device_id == device.id",
        ("batteries.c.device_id == device.id",),
        "a device and the batteries assigned to it are always in one tenant (provisioning checks it)",
    ),
    Same(
        "__init__",
        "self._last_budget_warning = 0.0",
        ("self._last_budget_warning = 1.0",),
        "time.monotonic() is far past 61 s on a running host: the first warning comes all the same",
    ),
    Same(
        "page_by_seq",
        "limit + 1)",
        ("limit + 2)",),
        "one row more fetched: the page is cut to limit and 'more' is the same",
    ),
    Same("balancing_cells", "range(8)", ("range(9)",), "bit 8 of a byte is always 0"),
    Same("decode_faults", "p[:7]", ("p[:8]",), "decode_fault_bits reads the first 7 bytes only"),
    Same("_amps", "/ 10, 1)", ("/ 10, 2)",), "an integer / 10 has one decimal: rounding to 2 gives the same"),
)


def _function_name(mutant: str) -> str:
    """``x_decode_mos__mutmut_3`` → ``decode_mos``; ``xǁCommandPollǁfeed__mutmut_2`` → ``feed``."""
    name = mutant.rsplit(".", 1)[-1].rsplit("__mutmut_", 1)[0]
    return name.split("ǁ")[-1] if "ǁ" in name else name.removeprefix("x_")


def _source_lines(fn: ast.AST) -> list[str]:
    assert isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
    lines = [ast.unparse(fn.args)]
    for stmt in fn.body:
        lines += ast.unparse(stmt).splitlines()
    return lines


def same_by_rule(functions: dict[str, ast.AST], mutant: str) -> Same | None:
    """The rule of :data:`EQUIVALENT` that the mutant matches, if any."""
    name = mutant.rsplit(".", 1)[-1]
    orig = functions.get(name.rsplit("__mutmut_", 1)[0] + "__mutmut_orig")
    mut = functions.get(name)
    if orig is None or mut is None:
        return None
    a, b = _source_lines(orig), _source_lines(mut)
    if len(a) != len(b):
        return None
    changed = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    if len(changed) != 1:
        return None
    i, fn = changed[0], _function_name(mutant)
    x, y, above = a[i], b[i], a[i - 1] if i else ""
    for rule in EQUIVALENT:
        if rule.function not in ("*", fn) or rule.before not in x or rule.above not in above:
            continue
        if y in {x.replace(rule.before, t) for t in rule.after}:
            return rule
    return None


def equivalent(functions: dict[str, ast.AST], mutant: str) -> bool:
    """The mutant differs from the original only by the case of SQL strings, or matches a rule of
    :data:`EQUIVALENT`."""
    if same_by_rule(functions, mutant) is not None:
        return True
    name = mutant.rsplit(".", 1)[-1]
    orig = functions.get(name.rsplit("__mutmut_", 1)[0] + "__mutmut_orig")
    mut = functions.get(name)
    if orig is None or mut is None:
        return False
    a, b = list(ast.walk(orig)), list(ast.walk(mut))
    if len(a) != len(b):
        return False
    diffs = 0
    for x, y in zip(a[1:], b[1:], strict=True):  # [0] is the def itself (its name differs)
        if type(x) is not type(y):
            return False
        if isinstance(x, ast.Constant) and isinstance(y, ast.Constant) and x.value != y.value:
            if not (isinstance(x.value, str) and isinstance(y.value, str)):
                return False
            if x.value.lower() != y.value.lower() or not _SQL.search(x.value):
                return False
            diffs += 1
    return diffs > 0


def toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def prepare(workdir: Path, modules: list[str], tests: list[str]) -> None:
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    shutil.copytree(ROOT / "src", workdir / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(ROOT / "tests", workdir / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    config = (ROOT / "pyproject.toml").read_text()
    config += (
        "\n[tool.mutmut]\n"
        'source_paths = ["src"]\n'
        f"only_mutate = {toml_list(modules)}\n"
        f"pytest_add_cli_args_test_selection = {toml_list(tests)}\n"
        # -n 0: the project's addopts spread tests over xdist workers; mutmut needs them in its own process
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-n", "0", '
        '"-m", "not slow and not browser"]\n'
        f"do_not_mutate_patterns = {toml_list(DO_NOT_MUTATE)}\n"
    )
    (workdir / "pyproject.toml").write_text(config)


def _mutmut(workdir: Path, max_children: int, names: tuple[str, ...] = ()) -> int:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env.pop("CI", None)  # a missing service skips instead of failing (the guarding tests need none)
    proc = subprocess.run(
        [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children), *names],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
    )
    with (workdir / "mutmut.log").open("a") as log_file:
        log_file.write(proc.stdout + proc.stderr)
    return proc.returncode


def run_target(
    name: str, workdir: Path, max_children: int, *, existing: bool = False, rerun: bool = False
) -> dict[str, Any]:
    modules, tests = TARGETS[name]
    returncode = 0
    if rerun:
        # the survivors of a complete run, checked again against the tests as they are now (same files,
        # tests only added): a mutant killed before stays killed, so the result is again a complete run
        shutil.rmtree(workdir / "tests")
        shutil.copytree(ROOT / "tests", workdir / "tests", ignore=shutil.ignore_patterns("__pycache__"))
        survivors = [
            s.split(" ", 1)[0]
            for res in run_target(name, workdir, max_children, existing=True).values()
            for s in res.get("survivors", [])
        ]
        if survivors:
            returncode = _mutmut(workdir, max_children, tuple(survivors))
    elif not existing:
        prepare(workdir, modules, tests)
        returncode = _mutmut(workdir, max_children)
    out: dict[str, Any] = {}
    for module in modules:
        meta = workdir / "mutants" / (module + ".meta")
        key = module.removeprefix("src/").removesuffix(".py").replace("/", ".")
        if not meta.exists():
            out[key] = {"error": f"mutmut produced no results (exit {returncode}); see {workdir}/mutmut.log"}
            continue
        from mutmut.stats import status_by_exit_code

        codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
        functions = _functions(workdir / "mutants" / module)
        statuses: dict[str, int] = {}
        survivors, same = [], []
        for mutant, code in codes.items():
            status = status_by_exit_code[code]
            if status not in KILLED and status != "not checked" and equivalent(functions, mutant):
                status = "equivalent"
                rule = same_by_rule(functions, mutant)
                same.append(f"{mutant}: {rule.why if rule else 'only the case of an SQL string'}")
            statuses[status] = statuses.get(status, 0) + 1
            if status not in KILLED | {"equivalent", "not checked"}:
                survivors.append(f"{mutant} ({status})")
        # a run cut short leaves mutants "not checked": the score is then over those checked (partial)
        checked = len(codes) - statuses.get("not checked", 0) - statuses.get("equivalent", 0)
        killed = sum(n for s, n in statuses.items() if s in KILLED)
        out[key] = {
            "mutants": len(codes),
            "checked": checked,
            "killed": killed,
            "score_pct": round(100.0 * killed / checked, 1) if checked else None,
            "partial": statuses.get("not checked", 0) > 0,
            "by_status": statuses,
            "tests": tests,
            "survivors": sorted(survivors),
            "equivalent": sorted(same),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--target", action="append", choices=sorted(TARGETS), help="default: all")
    ap.add_argument("--max-children", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "tbms-mutation")
    ap.add_argument("--survivors", action="store_true", help="list surviving mutants")
    ap.add_argument("--existing", action="store_true", help="report the results already in --workdir")
    ap.add_argument(
        "--rerun-survivors",
        action="store_true",
        help="check the survivors of the complete run in --workdir again, against the current tests",
    )
    add_check_argument(ap)
    args = ap.parse_args()
    modules: dict[str, Any] = {}
    for name in args.target or sorted(TARGETS):
        modules.update(
            run_target(
                name,
                args.workdir / name,
                args.max_children,
                existing=args.existing,
                rerun=args.rerun_survivors,
            )
        )
    targets = []
    for key, res in modules.items():
        if not args.survivors:
            res.pop("survivors", None)
            res.pop("equivalent", None)
        targets.append(Target(f"{key} mutation score %", res.get("score_pct"), ">=", TARGET_SCORE_PCT))
    result = {"benchmark": "mutation", "modules": modules, "targets": [t.as_dict() for t in targets]}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, res in modules.items():
            score, n = res.get("score_pct"), res.get("mutants")
            print(f"{key}: {score} % killed of {n} mutants {res.get('by_status')}")
    check_targets(targets, check=not args.no_check)


if __name__ == "__main__":
    main()
