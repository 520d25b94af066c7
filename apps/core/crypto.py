"""Encryption at rest for secrets tenants give us (model API keys, MCP auth headers).

Fernet (AES-128-CBC with HMAC-SHA256, from the `cryptography` package) under
keys from the environment: FIELD_ENCRYPTION_KEYS is a comma-separated list of
Fernet keys, the first one encrypting and all of them decrypting. A key is rotated
by putting the new one first, running ``manage.py reencrypt_secrets`` (every stored
secret of every tenant encrypted anew under the first key), then removing the old one.
"""

from __future__ import annotations

from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class SecretUnreadable(RuntimeError):
    """A stored secret could not be decrypted with any configured key."""


@cache
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key.encode()) for key in keys])


def _keys() -> tuple[str, ...]:
    return tuple(settings.FIELD_ENCRYPTION_KEYS)


def encrypt(plaintext: str) -> str:
    """Encrypt a secret for storage; the empty string stays empty."""
    if not plaintext:
        return ""
    return _fernet(_keys()).encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    """Decrypt a stored secret; the empty string stays empty."""
    if not token:
        return ""
    try:
        return _fernet(_keys()).decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretUnreadable("a stored secret cannot be decrypted with FIELD_ENCRYPTION_KEYS") from exc


def reencrypt(token: str) -> str:
    """A stored secret encrypted anew under the first key (its plaintext unchanged); the empty string stays empty."""
    if not token:
        return ""
    try:
        return _fernet(_keys()).rotate(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretUnreadable("a stored secret cannot be decrypted with FIELD_ENCRYPTION_KEYS") from exc


def generate_key() -> str:
    return Fernet.generate_key().decode()
