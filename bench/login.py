"""Login benchmark (issue 9): does an unknown email cost the same as a wrong password, and does a login
flood starve the rest of the API? Runs `trackingbms server` (SQLite, one process) on this machine.

    python bench/login.py --json

Prints one JSON object:
- ``unknown_email_ms`` / ``wrong_password_ms``: median login time for an email that does not exist and for
  one that does with a wrong password; ``ratio`` is their quotient (1.0 = indistinguishable; it was 2.0
  when an unknown email cost two scrypt runs). The throttle is opened wide for this part.
- ``me_idle_ms`` / ``me_during_flood_ms``: median ``GET /me`` alone and while ``--flood`` logins run at
  once (the baseline of the same run); ``flood_429`` is how many of those logins were told to come back
  (the hashing queue was full) rather than queued.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import httpx

CLI = [sys.executable, "-c", "from trackingbms.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def timed(c: httpx.AsyncClient, method: str, path: str, **kw: Any) -> tuple[float, int]:
    t = time.perf_counter()
    r = await c.request(method, path, **kw)
    return (time.perf_counter() - t) * 1000, r.status_code


async def measure(base: str, rounds: int, flood: int) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, timeout=120) as c:
        login = "/api/v1/auth/login"
        for _ in range(3):  # warm up (first hash, connection)
            await c.post(login, json={"email": "ops@bench.test", "password": "bench-pass-1"})
        unknown: list[float] = []
        wrong: list[float] = []
        for i in range(rounds):
            nobody = {"email": f"x{i}@b.test", "password": "w"}
            unknown.append((await timed(c, "POST", login, json=nobody))[0])
            known = {"email": "ops@bench.test", "password": "w"}
            wrong.append((await timed(c, "POST", login, json=known))[0])
        r = await c.post(login, json={"email": "ops@bench.test", "password": "bench-pass-1"})
        auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
        idle = [(await timed(c, "GET", "/api/v1/me", headers=auth))[0] for _ in range(rounds)]

        async def me_loop(stop: asyncio.Event, out: list[float]) -> None:
            while not stop.is_set():
                out.append((await timed(c, "GET", "/api/v1/me", headers=auth))[0])

        during: list[float] = []
        stop = asyncio.Event()
        prober = asyncio.create_task(me_loop(stop, during))
        body = {"email": "ops@bench.test", "password": "bench-pass-1"}
        results = await asyncio.gather(*(timed(c, "POST", login, json=body) for _ in range(flood)))
        stop.set()
        await prober
    u, w = statistics.median(unknown), statistics.median(wrong)
    return {
        "unknown_email_ms": round(u, 1),
        "wrong_password_ms": round(w, 1),
        "ratio": round(u / w, 2),
        "me_idle_ms": round(statistics.median(idle), 1),
        "me_during_flood_ms": round(statistics.median(during), 1) if during else None,
        "me_during_flood_max_ms": round(max(during), 1) if during else None,
        "flood": flood,
        "flood_200": sum(1 for _, s in results if s == 200),
        "flood_429": sum(1 for _, s in results if s == 429),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--flood", type=int, default=300)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "TRACKINGBMS_DATA_DIR": tmp,
            "TRACKINGBMS_LOGIN_FREE_FAILURES_ACCOUNT": "1000000",
            "TRACKINGBMS_LOGIN_FREE_FAILURES_ADDRESS": "1000000",
        }
        env.pop("TRACKINGBMS_DATABASE_URL", None)
        for cmd in (
            ["create-tenant", "bench"],
            ["create-user", "ops@bench.test", "-t", "bench", "--password", "bench-pass-1"],
        ):
            subprocess.run([*CLI, "admin", *cmd], env=env, check=True, capture_output=True)
        port = free_port()
        proc = subprocess.Popen(
            [*CLI, "server", "--port", str(port), "--log-level", "warning"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    sys.exit("server did not start")
                time.sleep(0.1)
            out = asyncio.run(measure(base, args.rounds, args.flood))
        finally:
            proc.terminate()
            proc.wait(30)
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
