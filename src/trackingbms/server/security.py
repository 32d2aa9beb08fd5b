"""Tokens and passwords: random tokens shown once and stored as sha256, passwords with scrypt."""

from __future__ import annotations

import base64
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
