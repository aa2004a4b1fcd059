import os
from pathlib import Path

import pytest

from fedp2p.errors import UserError
from fedp2p.wire import Connection, Role, SecretError, generate_secret, load_secret


def test_generated_secrets_are_long_and_fresh() -> None:
    first, second = generate_secret(), generate_secret()

    assert len(first) == 32 and first != second


def test_load_from_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = generate_secret()
    path = tmp_path / "secret.hex"
    path.write_text(secret.hex() + "\n")
    os.chmod(path, 0o600)
    monkeypatch.setenv("MY_SECRET", " " + secret.hex().upper())

    assert load_secret(str(path)) == secret
    assert load_secret(None, env_var="MY_SECRET") == secret


@pytest.mark.parametrize(
    ("content", "message"),
    [("abcd" * 4, "needs at least 16"), ("not hex at all!", "not valid hex")],
)
def test_bad_file_content_is_explained(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "secret.hex"
    path.write_text(content)

    with pytest.raises(SecretError, match=message):
        load_secret(str(path))


def test_missing_secret_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDP2P_SECRET", raising=False)

    with pytest.raises(SecretError, match="FEDP2P_SECRET"):
        load_secret()
    with pytest.raises(SecretError, match="cannot read the secret file"):
        load_secret(str(tmp_path / "absent"))


def test_secret_errors_are_user_errors_and_short_secrets_are_refused() -> None:
    assert issubclass(SecretError, UserError)
    with pytest.raises(SecretError, match="at least 16"):
        Connection(Role.INITIATOR, b"short")
    with pytest.raises(SecretError):
        generate_secret(8)
