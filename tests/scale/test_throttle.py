"""Login throttling holds across API processes on one PostgreSQL database: failures counted by one process
lock the account at every other (behind N processes an attacker does not get N times the attempts)."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.postgres


def test_failed_logins_on_one_process_lock_the_account_on_another(cluster) -> None:
    slow = {"TRACKINGBMS_LOGIN_BASE_DELAY_S": "120"}  # a lock outlasts this test on a loaded machine
    _, api_a = cluster.api(**slow)
    _, api_b = cluster.api(**slow)
    wrong = {"email": cluster.EMAIL, "password": "not-the-password"}
    statuses = [
        httpx.post(api_a + "/api/v1/auth/login", json=wrong, timeout=30).status_code for _ in range(7)
    ]
    assert statuses == [401] * 6 + [429], statuses  # the 6th failure (5 free) locks the account
    right = {"email": cluster.EMAIL, "password": cluster.PASSWORD}
    r = httpx.post(api_b + "/api/v1/auth/login", json=right, timeout=30)
    assert r.status_code == 429, r.text  # process B knows: the account is locked for a while
    assert int(r.headers["Retry-After"]) > 60
