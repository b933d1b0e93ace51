"""The keys tokens are signed with, read from the environment by ``project/settings.py``.

Pure functions of an environment mapping (no Django), so the rules are unit-tested and a
bad value stops the process at start with the variable named.

- ``DJANGO_SECRET_KEY`` signs sessions, CSRF tokens and (with HS256) JWTs. With debug off it
  is required and never a key that was ever written in this repository: a public key lets
  anyone mint a token for any user. A short or repetitive key (under 50 characters or 5
  distinct ones, Django's deployment check) or one of Django's ``django-insecure-`` keys is
  the operator's own secret, so it starts, with a warning on stderr; ``check --deploy``
  fails on it. With debug on and no key, each process makes up a random one.
- ``JWT_ALGORITHM`` is ``HS256`` (default; signed with ``DJANGO_SECRET_KEY``) or an
  asymmetric algorithm (``RS256``, ``ES256``, ``EdDSA``, ...) signed with the PEM private key in
  ``JWT_PRIVATE_KEY_FILE`` and verified with ``JWT_PUBLIC_KEY_FILE``, which is all another
  service needs to verify tokens.
"""

from __future__ import annotations

import hashlib
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from django.core.exceptions import ImproperlyConfigured

MIN_SECRET_KEY_LENGTH = 50
MIN_SECRET_KEY_CHARACTERS = 5
# SHA-256 of keys that were committed to this repository as defaults, so the rule holds
# without writing them down again: project/settings.py's development key (until issue 15).
PUBLISHED_KEY_DIGESTS = frozenset({"da3b8f738413a52851737368708a5b6e054e881ce8b7d1c3516930ae22af62e5"})
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def secret_key_from_env(env: Mapping[str, str], *, debug: bool) -> str:
    """``DJANGO_SECRET_KEY``, or ImproperlyConfigured naming it when the process must not start."""
    key = env.get("DJANGO_SECRET_KEY", "").strip()
    if debug:
        # Development only; without a key, tokens and sessions do not survive a restart.
        return key or "debug-" + secrets.token_urlsafe(48)
    if not key:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set: with debug off the server refuses to start without a secret key "
            "(`make serve` generates one in .secret_key; see docs/operations.md)"
        )
    if _digest(key) in PUBLISHED_KEY_DIGESTS:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is a key published in this repository: anyone can forge tokens with it; "
            "generate a new one"
        )
    weakness = secret_key_weakness(key)
    if weakness:
        sys.stderr.write(
            f"warning: DJANGO_SECRET_KEY is {weakness}; tokens signed with it are easier to forge "
            "(python -c 'import secrets; print(secrets.token_urlsafe(50))')\n"
        )
    return key


def secret_key_weakness(key: str) -> str:
    """Why Django's deployment check would call ``key`` weak, or "" when it would not."""
    if key.startswith("django-insecure-"):
        return "one of Django's development keys (django-insecure-)"
    if len(key) < MIN_SECRET_KEY_LENGTH or len(set(key)) < MIN_SECRET_KEY_CHARACTERS:
        return f"weak: under {MIN_SECRET_KEY_LENGTH} characters or {MIN_SECRET_KEY_CHARACTERS} distinct ones"
    return ""


@dataclass(frozen=True, slots=True)
class JwtKeys:
    algorithm: str
    signing_key: str
    verifying_key: str  # empty for HMAC: the signing key verifies


def _read_pem(env: Mapping[str, str], name: str) -> bytes:
    path = env.get(name, "").strip()
    if not path:
        raise ImproperlyConfigured(f"{name} is not set: JWT_ALGORITHM={env['JWT_ALGORITHM']} needs a PEM key file")
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ImproperlyConfigured(f"{name}={path!r}: cannot read it ({exc.strerror})") from None


def jwt_keys_from_env(env: Mapping[str, str], secret_key: str) -> JwtKeys:
    """The algorithm and keys simplejwt signs and verifies with (see the module docstring)."""
    algorithm = env.get("JWT_ALGORITHM", "").strip() or "HS256"
    if algorithm in HMAC_ALGORITHMS:
        return JwtKeys(algorithm, secret_key, "")
    if algorithm not in ASYMMETRIC_ALGORITHMS:
        expected = ", ".join(sorted(HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS))
        raise ImproperlyConfigured(f"JWT_ALGORITHM={algorithm!r}: expected one of {expected}")
    private_pem = _read_pem(env, "JWT_PRIVATE_KEY_FILE")
    try:
        private = serialization.load_pem_private_key(private_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(f"JWT_PRIVATE_KEY_FILE: not an unencrypted PEM private key ({exc})") from None
    public_pem = _read_pem(env, "JWT_PUBLIC_KEY_FILE")
    try:
        public = serialization.load_pem_public_key(public_pem)
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(f"JWT_PUBLIC_KEY_FILE: not a PEM public key ({exc})") from None
    # Sign and verify once: a pair that does not match, or keys of another family than the
    # algorithm (an EC key for RS256), would otherwise fail at the first login.
    try:
        probe = jwt.encode({"probe": True}, private, algorithm=algorithm)  # type: ignore[arg-type]
        jwt.decode(probe, public, algorithms=[algorithm])  # type: ignore[arg-type]
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise ImproperlyConfigured(
            f"JWT_PRIVATE_KEY_FILE and JWT_PUBLIC_KEY_FILE are not a matching {algorithm} key pair ({exc})"
        ) from None
    return JwtKeys(algorithm, private_pem.decode(), public_pem.decode())
