"""The site's secret key for pseudonymous identifiers, kept outside every output folder.

Hashed patient ids (``[output] patient_id = "hash"``) and the ledger's patient keys are
HMAC-SHA-256 of the PatientID under this key, truncated to 128 bits: without the key nobody can
test candidate ids against them (a salted 64-bit hash next to its salt falls to brute force in
seconds). The key comes from, in order:

1. ``$FRACTURE_SCREEN_SALT`` (the variable's historical name; any text);
2. ``[output] id_key_file`` of the site config: a file holding the key;
3. ``$XDG_CONFIG_HOME/fracture-screen/id-key`` (``~/.config/...``), made on first use.

A key file must be readable by its owner only (mode 0600: a looser one is refused) and must not
lie inside the output folder; a new one is made with 32 random bytes. Keep it (and a backup)
where the service user alone can read it, e.g. ``/etc/fracture-screen/id-key``: a new key
gives every patient a new pseudonym, and the ledger refuses a folder made with another key
(:func:`key_fingerprint`) rather than mistaking every returning patient for a collision.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

from screen.errors import ConfigError

ENV_KEY = "FRACTURE_SCREEN_SALT"
ID_BITS = 128
log = logging.getLogger("screen.run")


def default_key_file() -> Path:
    """``$XDG_CONFIG_HOME/fracture-screen/id-key`` (``~/.config`` when the variable is unset)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "fracture-screen" / "id-key"


def load_id_key(key_file: Path | None = None, *, out_dir: Path | None = None, create: bool = True) -> bytes:
    """The key (see the module docstring for where it comes from).

    Args:
        key_file: ``[output] id_key_file``; ``None`` for the default file.
        out_dir: the output folder, which must not hold the key file.
        create: make the key file when it does not exist (not for a dry run: then a throwaway key).

    Raises:
        ConfigError: a key file inside the output folder, readable by others, or unreadable.
    """
    env = os.environ.get(ENV_KEY)
    if env:
        return env.encode("utf-8")
    path = Path(key_file) if key_file is not None else default_key_file()
    if out_dir is not None and path.resolve().is_relative_to(Path(out_dir).resolve()):
        raise ConfigError(f"id key file {path} lies inside the output folder {out_dir}; keep it elsewhere "
                          "(e.g. /etc/fracture-screen/id-key), readable by the service user only")
    if not path.exists():
        if not create:
            return secrets.token_bytes(32)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secrets.token_hex(32) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        log.info("made a new identifier key at %s: keep it and a backup (a new key gives every patient a "
                 "new pseudonym)", path)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(f"id key file {path} is readable by others (mode {mode:04o}); make it private: "
                          f"chmod 600 {path}")
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the id key file {path}: {exc}") from None
    if not text:
        raise ConfigError(f"id key file {path} is empty; remove it to have a new key made, or restore it")
    return text.encode("utf-8")


def pseudonym(key: bytes, *parts: str) -> str:
    """HMAC-SHA-256 of ``parts`` (joined by NUL) under ``key``, as 128 bits of hex."""
    message = "\x00".join(parts).encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).hexdigest()[: ID_BITS // 4]


def key_fingerprint(key: bytes) -> str:
    """What the ledger keeps to recognise the key (it tells nothing about the key itself)."""
    return pseudonym(key, "fracture-screen id key fingerprint")
