"""S3 settings from the environment: an empty value means "none" (AWS's own endpoint, boto3's credentials)."""

from __future__ import annotations

import pytest

from shared.settings import load_settings


def test_empty_endpoint_and_keys_mean_aws_and_its_credential_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ENDPOINT_URL", "PUBLIC_ENDPOINT_URL", "ACCESS_KEY_ID", "SECRET_ACCESS_KEY"):
        monkeypatch.setenv(f"VEIL_S3__{name}", "")
    s3 = load_settings().s3
    assert (s3.endpoint_url, s3.public_endpoint_url, s3.access_key_id, s3.secret_access_key) == (None,) * 4


def test_unset_keeps_the_embedded_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VEIL_S3__ENDPOINT_URL", raising=False)
    assert load_settings().s3.endpoint_url == "http://127.0.0.1:8333"
