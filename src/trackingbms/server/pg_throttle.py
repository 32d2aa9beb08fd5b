"""Login throttling shared by every server process on one PostgreSQL database (table ``login_throttle``).

Same policy and interface as :class:`~trackingbms.server.throttle.MemoryLoginThrottle` (see that module), with
the state in a table so that N API processes behind one address do not give an attacker N times the
attempts. Times are wall-clock seconds (the processes share no monotonic clock). One short statement per
call; a failed login is an upsert, so concurrent failures from several processes all count.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import case, delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from trackingbms.server.db import login_throttle
from trackingbms.server.throttle import ThrottlePolicy


class PgLoginThrottle:
    def __init__(
        self,
        engine: AsyncEngine,
        policies: dict[str, ThrottlePolicy],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.policies = policies
        self.clock = clock

    def _policy(self, key: str) -> ThrottlePolicy:
        return self.policies[key.split(":", 1)[0]]

    async def retry_after(self, keys: Sequence[str]) -> float:
        now = self.clock()
        t = login_throttle.c
        async with self.engine.connect() as conn:
            q = select(t.key, t.locked_until, t.last_failure).where(t.key.in_(keys))
            rows = (await conn.execute(q)).all()
        wait = 0.0
        for key, locked_until, last_failure in rows:
            if now - last_failure <= self._policy(key).forget_s:
                wait = max(wait, locked_until - now)
        return wait

    async def failed(self, keys: Sequence[str]) -> None:
        now = self.clock()
        t = login_throttle.c
        async with self.engine.begin() as conn:
            for key in keys:
                pol = self._policy(key)
                row = (
                    await conn.execute(
                        insert(login_throttle)
                        .values(key=key, failures=1, locked_until=0.0, last_failure=now)
                        .on_conflict_do_update(
                            index_elements=[t.key],
                            set_={
                                # a key forgotten (forget_s since its last failure) starts again at 1
                                "failures": _case_forgotten(now, pol.forget_s),
                                "last_failure": now,
                            },
                        )
                        .returning(t.failures)
                    )
                ).scalar_one()
                if row > pol.free:
                    locked = now + min(pol.max_s, pol.base_s * 2 ** (row - pol.free - 1))
                    await conn.execute(
                        login_throttle.update().where(t.key == key).values(locked_until=locked)
                    )

    async def succeeded(self, keys: Sequence[str]) -> None:
        accounts = [k for k in keys if k.startswith("account:")]
        if accounts:
            async with self.engine.begin() as conn:
                await conn.execute(delete(login_throttle).where(login_throttle.c.key.in_(accounts)))


def _case_forgotten(now: float, forget_s: float) -> Any:
    t = login_throttle.c
    return case((t.last_failure < now - forget_s, 1), else_=t.failures + 1)
