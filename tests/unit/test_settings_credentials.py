"""Credential settings (issue 15): the secret-key rules, JWT key files, login rates, token versions.

Pure functions of an environment mapping; every refusal names the variable to fix.
"""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from django.core.exceptions import ImproperlyConfigured

from accounts.keys import jwt_keys_from_env, secret_key_from_env
from accounts.models import User
from accounts.tokens import token_is_current, token_version_of
from realtime.conf import RealtimeSettings, SettingsError

GOOD_KEY = "k" * 40 + "0123456789"  # 50 characters, 11 distinct
OLD_DEV_KEY = "dev-insecure-key-change-me-0123456789abcdef0123456789abcdef"  # in git history


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("", "is not set"),
        ("   ", "is not set"),
        (OLD_DEV_KEY, "published"),
    ],
)
def test_production_refuses_missing_and_published_keys(key: str, why: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=rf"^DJANGO_SECRET_KEY .*{why}"):
        secret_key_from_env({"DJANGO_SECRET_KEY": key}, debug=False)


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("django-insecure-" + "x1y2z3" * 10, "django-insecure-"),
        ("short-but-distinct-0123456789", "weak"),
        ("a" * 64, "weak"),
    ],
)
def test_production_starts_with_a_weak_key_of_the_operator_but_warns(
    key: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The operator's own short key is not forgeable by anyone reading this repository: the
    server starts and says why the key is weak (``check --deploy`` fails on it)."""
    assert secret_key_from_env({"DJANGO_SECRET_KEY": key}, debug=False) == key
    warning = capsys.readouterr().err
    assert warning.startswith("warning: DJANGO_SECRET_KEY is ")
    assert why in warning
    assert key not in warning  # the key itself is never printed


def test_production_accepts_a_strong_key_and_debug_invents_one_per_process() -> None:
    assert secret_key_from_env({"DJANGO_SECRET_KEY": GOOD_KEY}, debug=False) == GOOD_KEY
    first, second = secret_key_from_env({}, debug=True), secret_key_from_env({}, debug=True)
    assert first != second
    assert len(first) >= 50
    assert secret_key_from_env({"DJANGO_SECRET_KEY": "short"}, debug=True) == "short"


def test_hs256_is_the_default_and_signs_with_the_secret_key() -> None:
    keys = jwt_keys_from_env({}, GOOD_KEY)
    assert (keys.algorithm, keys.signing_key, keys.verifying_key) == ("HS256", GOOD_KEY, "")


def test_unknown_algorithm_is_refused_by_name() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"^JWT_ALGORITHM='none'"):
        jwt_keys_from_env({"JWT_ALGORITHM": "none"}, GOOD_KEY)


def _pem_files(tmp_path: Path, private: object, public: object, name: str = "k") -> dict[str, str]:
    private_pem = private.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = public.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / f"{name}.key").write_bytes(private_pem)
    (tmp_path / f"{name}.pub").write_bytes(public_pem)
    return {"JWT_PRIVATE_KEY_FILE": str(tmp_path / f"{name}.key"), "JWT_PUBLIC_KEY_FILE": str(tmp_path / f"{name}.pub")}


def test_eddsa_keys_sign_tokens_the_public_key_alone_verifies(tmp_path: Path) -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    files = _pem_files(tmp_path, private, private.public_key())
    keys = jwt_keys_from_env({"JWT_ALGORITHM": "EdDSA", **files}, GOOD_KEY)
    token = jwt.encode({"user_id": "1"}, keys.signing_key, algorithm="EdDSA")
    public_only = Path(files["JWT_PUBLIC_KEY_FILE"]).read_text()
    assert jwt.decode(token, public_only, algorithms=["EdDSA"]) == {"user_id": "1"}


def test_asymmetric_key_problems_name_the_variable(tmp_path: Path) -> None:
    env = {"JWT_ALGORITHM": "RS256"}
    with pytest.raises(ImproperlyConfigured, match=r"^JWT_PRIVATE_KEY_FILE is not set"):
        jwt_keys_from_env(env, GOOD_KEY)
    with pytest.raises(ImproperlyConfigured, match=r"^JWT_PRIVATE_KEY_FILE='/nonexistent/k': cannot read"):
        jwt_keys_from_env({**env, "JWT_PRIVATE_KEY_FILE": "/nonexistent/k", "JWT_PUBLIC_KEY_FILE": "/x"}, GOOD_KEY)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    mismatched = {**_pem_files(tmp_path, rsa_key, rsa_key.public_key(), "a")}
    mismatched["JWT_PUBLIC_KEY_FILE"] = _pem_files(tmp_path, other, other.public_key(), "b")["JWT_PUBLIC_KEY_FILE"]
    with pytest.raises(ImproperlyConfigured, match="not a matching RS256 key pair"):
        jwt_keys_from_env({**env, **mismatched}, GOOD_KEY)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ImproperlyConfigured, match="not a matching RS256 key pair"):
        jwt_keys_from_env({**env, **_pem_files(tmp_path, ec_key, ec_key.public_key(), "c")}, GOOD_KEY)
    (tmp_path / "junk.key").write_text("not a key")
    with pytest.raises(ImproperlyConfigured, match=r"^JWT_PRIVATE_KEY_FILE: not an unencrypted PEM"):
        jwt_keys_from_env(
            {**env, "JWT_PRIVATE_KEY_FILE": str(tmp_path / "junk.key"), "JWT_PUBLIC_KEY_FILE": "/x"}, GOOD_KEY
        )


@pytest.mark.parametrize("name", ["REALTIME_LOGIN_RATE", "REALTIME_LOGIN_ADDRESS_RATE"])
@pytest.mark.parametrize("value", ["10", "0/min", "ten/min", "10/fortnight", "-1/s"])
def test_login_rates_are_validated(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"^{name}="):
        RealtimeSettings.from_env({name: value})


def test_login_rate_defaults() -> None:
    settings = RealtimeSettings.from_env({})
    assert (settings.login_rate, settings.login_address_rate) == ("10/min", "30/min")
    assert RealtimeSettings.from_env({"REALTIME_LOGIN_RATE": "5/hour"}).login_rate == "5/hour"


def test_a_password_change_bumps_the_token_version_a_new_account_does_not() -> None:
    new = User(username="n")
    new.set_password("first-password-123")
    assert new.token_version == 0  # tokens of a new account carry version 0
    existing = User(pk=7, username="e", token_version=3)
    existing.set_password("another-password-456")
    assert existing.token_version == 4
    existing.set_unusable_password()
    assert existing.token_version == 5
    assert token_is_current(5, existing)
    assert not token_is_current(4, existing)


@pytest.mark.parametrize("payload", [{"tv": "1"}, {"tv": -1}, {"tv": 1.0}, {"tv": True}, {"tv": 2**40}])
def test_malformed_token_versions_are_refused(payload: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="tv"):
        token_version_of(payload)
    assert token_version_of({}) == 0  # issued before versions existed: valid until a change
