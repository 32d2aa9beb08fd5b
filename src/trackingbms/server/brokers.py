"""Broker-side identities for MQTT devices and ingest workers: device keys, Mosquitto password and ACL files.

A device's MQTT identity (its broker user name and the middle of its topics ``tbms/<key>/…``) is
``t<tenant id>-<device name>``: device names are unique per tenant only, and a broker needs one global
name. The ACL lets a device publish only to ``tbms/<its key>/samples`` and ``/heartbeat`` and read only
``tbms/<its key>/ack``; the ingest workers read every device's samples and write every ack. The ingest
worker trusts the key in the topic because the broker enforces that ACL.

Mosquitto's password file is written here directly (its documented ``$7$`` PBKDF2-SHA512 format, as
``mosquitto_passwd`` writes it) so that provisioning needs neither that tool nor a shell; Mosquitto
re-reads both files on SIGHUP.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
from pathlib import Path

DEVICE_KEY = re.compile(r"^t(\d+)-([A-Za-z0-9_-]{1,100})$")
NAME_OK = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
MOSQUITTO_ITERATIONS = 101  # mosquitto_passwd's default

ACL_HEADER = """\
# Written by `trackingbms admin mqtt-device` / `mqtt-worker`; edits are overwritten.
# A device (user name t<tenant>-<device>) may publish only its own samples and heartbeats and read only
# its own acknowledgements.
pattern write tbms/%u/samples
pattern write tbms/%u/heartbeat
pattern read tbms/%u/ack
"""


def device_key(tenant_id: int, name: str) -> str:
    if not NAME_OK.match(name):
        raise ValueError(
            f"device name {name!r} cannot be an MQTT identity: use letters, digits, '_' and '-' only"
        )
    return f"t{tenant_id}-{name}"


def parse_device_key(key: str) -> tuple[int, str] | None:
    m = DEVICE_KEY.match(key)
    return (int(m.group(1)), m.group(2)) if m else None


def parse_topic(topic: str) -> tuple[str, str] | None:
    """``tbms/<key>/samples`` (MQTT) or ``tbms.<key>.samples`` (NATS subject) → (key, kind)."""
    parts = topic.split("/") if "/" in topic else topic.split(".")
    if len(parts) != 3 or parts[0] != "tbms" or parts[2] not in ("samples", "heartbeat"):
        return None
    return parts[1], parts[2]


def mosquitto_hash(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(12)
    dk = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, MOSQUITTO_ITERATIONS)
    return f"$7${MOSQUITTO_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(dk).decode()}"


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def set_mosquitto_user(passwd_file: Path, user: str, password: str | None) -> None:
    """Add or replace ``user`` in a Mosquitto password file; ``password=None`` removes the user."""
    lines = [ln for ln in _read_lines(passwd_file) if ln.strip() and ln.split(":", 1)[0] != user]
    if password is not None:
        lines.append(f"{user}:{mosquitto_hash(password)}")
    _write_atomic(passwd_file, "\n".join(lines) + "\n" if lines else "")


def write_mosquitto_acl(acl_file: Path, workers: list[str] | None = None) -> list[str]:
    """(Re)write the ACL: the device pattern rules and one block per ingest worker user (the workers
    already listed in the file are kept). Returns the worker users now listed."""
    known = [ln.split(None, 1)[1].strip() for ln in _read_lines(acl_file) if ln.startswith("user ")]
    names = list(dict.fromkeys([*known, *(workers or [])]))
    text = ACL_HEADER
    for name in names:
        text += f"\n# ingest worker\nuser {name}\ntopic read tbms/+/samples\ntopic read tbms/+/heartbeat\n"
        text += "topic write tbms/+/ack\n"
    _write_atomic(acl_file, text)
    return names


def worker_name_ok(name: str) -> bool:
    return bool(NAME_OK.match(name)) and DEVICE_KEY.match(name) is None


# --------------------------------------------------------------------------------------------------- NATS

NATS_HEADER = """\
# Written by `trackingbms admin mqtt-device` / `mqtt-worker` (one user per line); include it from the
# nats-server configuration (`include tbms-users.conf`) and reload (nats-server --signal reload).
authorization {
  users = [
"""


def nats_device_permissions(key: str) -> str:
    # $MQTT.sub.> : NATS delivers a QoS 1 subscription through an internal subject of that name
    return (
        f'{{ publish: ["tbms.{key}.samples", "tbms.{key}.heartbeat"], '
        f'subscribe: ["tbms.{key}.ack", "$MQTT.sub.>"] }}'
    )


def set_nats_user(users_file: Path, user: str, password: str | None, *, device: bool = True) -> None:
    """Add or replace ``user`` in a NATS authorization include file (password stored as a bcrypt hash; a
    device may publish only its own samples and heartbeats and read only its own acks; a worker is
    unrestricted); ``password=None`` removes it."""
    import bcrypt

    marker = f'    {{ user: "{user}",'
    entries = [
        ln for ln in _read_lines(users_file) if ln.startswith('    { user: "') and not ln.startswith(marker)
    ]
    if password is not None:
        # "2a": the Go bcrypt in nats-server refuses the newer "2b" prefix (same algorithm)
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(11, prefix=b"2a")).decode()
        perms = f", permissions: {nats_device_permissions(user)}" if device else ""
        entries.append(f'{marker} password: "{hashed}"{perms} }}')
    _write_atomic(users_file, NATS_HEADER + "".join(e + "\n" for e in entries) + "  ]\n}\n")
