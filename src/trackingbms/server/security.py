"""Tokens and passwords: random tokens shown once and stored as sha256, passwords with scrypt."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import secrets

DEVICE_TOKEN_PREFIX = "tbd_"
USER_TOKEN_PREFIX = "tbu_"
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    # tokens are 256 random bits: a fast hash is enough (no dictionary to attack)
    return hashlib.sha256(token.encode()).hexdigest()


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    dk = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    b64 = base64.urlsafe_b64encode
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(dk).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        algo, n, r, p, salt, dk = stored.split("$")
    except ValueError:
        return False
    if algo != "scrypt":
        return False
    want = base64.urlsafe_b64decode(dk)
    got = hashlib.scrypt(
        password.encode(), salt=base64.urlsafe_b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(want)
    )
    return hmac.compare_digest(want, got)


@functools.cache
def dummy_hash() -> str:
    """A password hash no password matches (computed once): checked for unknown emails, so that an
    unknown email costs the same single scrypt as a wrong password and timing does not tell them apart."""
    return hash_password(secrets.token_urlsafe(16))


class Busy(Exception):
    """Too many logins are waiting for the password hasher: retry in a moment."""


class PasswordChecker:
    """scrypt in worker threads, at most ``concurrency`` at once and at most ``max_waiting`` queued:
    a login flood then costs a bounded share of the CPU and the API keeps answering."""

    def __init__(self, concurrency: int, max_waiting: int) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self.max_waiting = max_waiting
        self._waiting = 0

    async def verify(self, password: str, stored: str | None) -> bool:
        """True if ``password`` matches ``stored``; None (no such user) costs the same and is False."""
        if self._waiting >= self.max_waiting:
            raise Busy("too many logins at once")
        self._waiting += 1
        try:
            async with self._slots:
                ok = await asyncio.to_thread(verify_password, password, stored or dummy_hash())
        finally:
            self._waiting -= 1
        return ok and stored is not None
