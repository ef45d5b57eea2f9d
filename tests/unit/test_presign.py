"""Presigned URLs signed without boto3's request pipeline are the URLs boto3 itself would give."""

from __future__ import annotations

import datetime
from typing import Any

import boto3
import botocore.auth
import pytest
from botocore.config import Config

import shared.presign
from shared.presign import PathStylePresigner
from shared.settings import S3Settings
from shared.storage import ObjectStore

ENDPOINT = "http://127.0.0.1:8333"
KEYS = ["uploads/abc", "x y+z.jpg", "a/ü/ß?#&=%2F", "results/job.jpg", "~tilde!*()'", "dir//double/"]


@pytest.fixture(autouse=True)
def _frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    # Both signers read the time here, so the two URLs of one case can be compared byte for byte.
    moment = datetime.datetime(2026, 11, 23, 6, 0, 0)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: moment)
    monkeypatch.setattr(shared.presign, "_utcnow", lambda: moment)


def _boto3(endpoint: str | None = ENDPOINT, token: str | None = None, region: str = "eu-west-1") -> Any:
    return boto3.session.Session(
        aws_access_key_id="AKID", aws_secret_access_key="SECRET", aws_session_token=token, region_name=region
    ).client(
        "s3", endpoint_url=endpoint, config=Config(signature_version="s3v4", s3={"addressing_style": "path"})
    )


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("token", [None, "session/token+="])
def test_same_url_as_boto3(key: str, token: str | None) -> None:
    client = _boto3(token=token)
    session = boto3.session.Session(
        aws_access_key_id="AKID", aws_secret_access_key="SECRET", aws_session_token=token
    )
    presigner = PathStylePresigner(ENDPOINT, "eu-west-1", session.get_credentials())
    for operation, method, content_type in (
        ("get_object", "GET", None),
        ("put_object", "PUT", "image/jpeg"),
        ("delete_object", "DELETE", None),
    ):
        params = {"Bucket": "veil-bucket", "Key": key}
        if content_type:
            params["ContentType"] = content_type
        expected = client.generate_presigned_url(operation, Params=params, ExpiresIn=300)
        got = presigner.url(method, "veil-bucket", key, expires_in=300, content_type=content_type)
        assert got == expected


def test_object_store_uses_it_for_a_configured_endpoint() -> None:
    settings = S3Settings(endpoint_url=ENDPOINT + "/", public_endpoint_url="https://media.example.org")
    store = ObjectStore(settings)
    reference = boto3.session.Session(aws_access_key_id="veil", aws_secret_access_key="veil-secret")
    config = Config(signature_version="s3v4", s3={"addressing_style": "path"})
    internal = reference.client("s3", endpoint_url=ENDPOINT, region_name="us-east-1", config=config)
    public = reference.client(
        "s3", endpoint_url="https://media.example.org", region_name="us-east-1", config=config
    )
    params = {"Bucket": "veil", "Key": "uploads/j1", "ContentType": "image/png"}
    assert store.presign("put_object", "uploads/j1", content_type="image/png", expires_in=300) == (
        internal.generate_presigned_url("put_object", Params=params, ExpiresIn=300)
    )
    assert store.presign_get("results/j1.png", 86400) == public.generate_presigned_url(
        "get_object", Params={"Bucket": "veil", "Key": "results/j1.png"}, ExpiresIn=86400
    )


def test_aws_endpoints_keep_boto3s_presigning() -> None:
    # No endpoint configured: AWS's own host names (regional, FIPS, dual-stack) are boto3's business.
    store = ObjectStore(S3Settings(endpoint_url=None, region="eu-central-1"))
    url = store.presign("get_object", "uploads/j2", expires_in=60)
    assert url.startswith("https://s3.eu-central-1.amazonaws.com/veil/uploads/j2?")
    reference = boto3.session.Session(aws_access_key_id="veil", aws_secret_access_key="veil-secret")
    client = reference.client(
        "s3", region_name="eu-central-1", config=Config(s3={"addressing_style": "path"})
    )
    params = {"Bucket": "veil", "Key": "uploads/j2"}
    assert url == client.generate_presigned_url("get_object", Params=params, ExpiresIn=60)


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://media.example.org",
        "https://media.example.org:443",
        "http://Store.Local:80",
        "http://h:9000/s3",
    ],
)
def test_same_url_as_boto3_on_other_endpoints(endpoint: str) -> None:
    # Default ports are left out of the signed host, as a client leaves them out of its Host header.
    client = _boto3(endpoint=endpoint)
    session = boto3.session.Session(aws_access_key_id="AKID", aws_secret_access_key="SECRET")
    presigner = PathStylePresigner(endpoint, "eu-west-1", session.get_credentials())
    params = {"Bucket": "b", "Key": "results/j.jpg"}
    expected = client.generate_presigned_url("get_object", Params=params, ExpiresIn=60)
    assert presigner.url("GET", "b", "results/j.jpg", expires_in=60) == expected


def test_the_days_signing_key_changes_with_the_day(monkeypatch: pytest.MonkeyPatch) -> None:
    session = boto3.session.Session(aws_access_key_id="AKID", aws_secret_access_key="SECRET")
    client = _boto3()
    clock = [datetime.datetime(2026, 11, 23, 23, 59, 59)]
    presigner = PathStylePresigner(ENDPOINT, "eu-west-1", session.get_credentials(), now=lambda: clock[0])
    for moment in (clock[0], clock[0] + datetime.timedelta(seconds=2)):  # the second is the next day
        clock[0] = moment
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda m=moment: m)
        expected = client.generate_presigned_url(
            "get_object", Params={"Bucket": "b", "Key": "k"}, ExpiresIn=60
        )
        assert presigner.url("GET", "b", "k", expires_in=60) == expected
