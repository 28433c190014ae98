"""Gateway credentials on Mosquitto: a password file entry and ACL lines per gateway.

A gateway logs in with its own id as user name and may publish only under
``<topic root>/<gateway>/#``. The service accounts come first in the ACL file and are kept as
they are: ingest reads ``<root>/+/+`` (shared subscriptions included) and writes the retained
alarm topics ``<root>/alerts/#``; the simulated city and the API (quarantine replay) publish on
gateways' behalf under ``<root>/+/+``. Mosquitto denies whatever no line allows.

Password lines use Mosquitto 2's format, ``user:$7$<iterations>$<salt>$<hash>`` (PBKDF2 with
HMAC-SHA512, base64), computed here rather than by ``mosquitto_passwd -b``, which would put the
password on a command line; the tests check that a real Mosquitto accepts it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import tempfile
from collections.abc import Iterable
from pathlib import Path

ITERATIONS = 101  # mosquitto_passwd's default in Mosquitto 2.0
SALT_BYTES = 12

INGEST_USER = "pusat-ingest"
SIMULATOR_USER = "pusat-simulator"
API_USER = "pusat-api"
SERVICE_USERS = (INGEST_USER, SIMULATOR_USER, API_USER)

# A topic level and a user name at once: no wildcards, separators, spaces or ':' (the password
# file's separator); not starting with '$' (reserved topics).
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_GATEWAY_MARK = "# gateway "


def check_gateway_id(gateway: str) -> str:
    if not _ID.match(gateway):
        raise ValueError(
            f"gateway id {gateway!r}: use 1-64 letters, digits, '.', '_' or '-', starting with"
            " a letter or digit"
        )
    if gateway == "alerts" or gateway in SERVICE_USERS:
        raise ValueError(f"gateway id {gateway!r} is reserved")
    return gateway


def hash_password(password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """The ``$7$`` hash Mosquitto 2 checks passwords against."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    b64 = base64.b64encode
    return f"$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, hashed: str) -> bool:
    """Whether ``password`` matches a ``$7$`` hash (as Mosquitto would decide)."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7":
        raise ValueError("not a Mosquitto $7$ password hash")
    salt = base64.b64decode(parts[3])
    return secrets.compare_digest(hash_password(password, salt, int(parts[2])), hashed)


def new_password() -> str:
    return secrets.token_urlsafe(18)


def _write_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically, readable by its owner only (it holds password hashes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def set_password(path: Path, user: str, password: str) -> None:
    """Add or replace ``user``'s line in a Mosquitto password file (created if missing)."""
    lines = path.read_text("utf-8").splitlines() if path.exists() else []
    entry = f"{user}:{hash_password(password)}"
    kept = [line for line in lines if line.split(":", 1)[0] != user]
    _write_private(path, "\n".join([*kept, entry]) + "\n")


def service_acl(topic_root: str) -> str:
    return f"""\
# Mosquitto ACL for Pusat. `pusat gateway add <id>` rewrites this file: it keeps the service
# accounts below and one block per gateway (from its "# gateway <id>" line to the next block).
# Mosquitto denies everything that no line allows.

# ingest: every gateway's messages (also as a shared subscription), the retained alarm topics,
# and the broker's uptime for health checks
user {INGEST_USER}
topic read {topic_root}/+/+
topic write {topic_root}/alerts/#
topic read $SYS/broker/uptime
# gateways of other dialects (Gateway guide): LoRaWAN network servers' uplinks, Sparkplug B edge
# nodes, and the rebirth requests ingest sends them as their host application
topic read application/#
topic read v3/#
topic read spBv1.0/#
topic write spBv1.0/+/NCMD/#

# the simulated city publishes as every simulated gateway (a demo account: drop it in production)
user {SIMULATOR_USER}
topic write {topic_root}/+/+
topic write application/#
topic write spBv1.0/#
topic read spBv1.0/+/NCMD/#

# the API republishes quarantined messages on their original topics (replay)
user {API_USER}
topic write {topic_root}/+/+
topic write application/#
topic write v3/#
topic write spBv1.0/#
"""


def gateway_acl(topic_root: str, gateway: str) -> str:
    return f"{_GATEWAY_MARK}{gateway}\nuser {gateway}\ntopic write {topic_root}/{gateway}/#\n"


def render_acl(topic_root: str, gateways: Iterable[str]) -> str:
    blocks = [gateway_acl(topic_root, g) for g in sorted(set(gateways))]
    return "\n".join([service_acl(topic_root), *blocks])


def acl_gateways(text: str) -> list[str]:
    """The gateways an ACL file written by `render_acl` holds."""
    return [
        line[len(_GATEWAY_MARK) :].strip()
        for line in text.splitlines()
        if line.startswith(_GATEWAY_MARK)
    ]


def add_gateway(
    password_file: Path, acl_file: Path, gateway: str, password: str, topic_root: str
) -> None:
    """Give ``gateway`` a password and its ACL block; re-adding replaces its password."""
    check_gateway_id(gateway)
    known = acl_gateways(acl_file.read_text("utf-8")) if acl_file.exists() else []
    set_password(password_file, gateway, password)
    acl_file.parent.mkdir(parents=True, exist_ok=True)
    acl_file.write_text(render_acl(topic_root, [*known, gateway]), "utf-8")
