"""Create and load the network's shared secret (hex in a file or an environment variable)."""

from __future__ import annotations

import logging
import os
import secrets
import stat

from fedp2p.errors import UserError

log = logging.getLogger(__name__)

MIN_SECRET_BYTES = 16
DEFAULT_SECRET_BYTES = 32
ENV_VAR = "FEDP2P_SECRET"
_HOW_TO = (
    "create one with `fedp2p keygen FILE` and give the same file to every peer of the network"
)


class SecretError(UserError):
    """The shared secret is missing or unusable; the message says how to fix it."""


def generate_secret(nbytes: int = DEFAULT_SECRET_BYTES) -> bytes:
    """Return a fresh random secret from the OS, long enough that guessing it is hopeless."""
    if nbytes < MIN_SECRET_BYTES:
        raise SecretError(f"a secret needs at least {MIN_SECRET_BYTES} bytes, not {nbytes}")
    return secrets.token_bytes(nbytes)


def check_secret(secret: object) -> bytes:
    """Refuse secrets that are not bytes or too short to resist guessing."""
    if not isinstance(secret, (bytes, bytearray)):
        raise SecretError(f"the shared secret must be bytes, not {type(secret).__name__}")
    if len(secret) < MIN_SECRET_BYTES:
        raise SecretError(
            f"the shared secret has {len(secret)} bytes but needs at least "
            f"{MIN_SECRET_BYTES}; {_HOW_TO}"
        )
    return bytes(secret)


def _parse_hex(text: str, source: str) -> bytes:
    """Decode hex text (whitespace around it ignored), naming the source when it is invalid."""
    try:
        secret = bytes.fromhex(text.strip())
    except ValueError:
        raise SecretError(f"the shared secret in {source} is not valid hex; {_HOW_TO}") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise SecretError(
            f"the shared secret in {source} has {len(secret)} bytes but needs at least "
            f"{MIN_SECRET_BYTES} ({2 * MIN_SECRET_BYTES} hex digits); {_HOW_TO}"
        )
    return secret


def load_secret(path: str | None = None, env_var: str = ENV_VAR) -> bytes:
    """Read the secret from a hex file if a path is given, else from a hex environment variable."""
    if path is not None:
        try:
            with open(path, encoding="ascii") as handle:
                text = handle.read()
            mode = os.stat(path).st_mode
        except (OSError, UnicodeDecodeError) as exc:
            raise SecretError(f"cannot read the secret file {path}: {exc}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("secret file %s is readable by other users; chmod 600 it", path)
        return _parse_hex(text, f"file {path}")
    value = os.environ.get(env_var)
    if not value:
        raise SecretError(
            f"no shared secret: pass a secret file or set {env_var} to at least "
            f"{MIN_SECRET_BYTES} bytes of hex; {_HOW_TO}"
        )
    return _parse_hex(value, f"${env_var}")
