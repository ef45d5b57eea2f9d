from __future__ import annotations

import base64
import time

import orjson
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from shared.webhooks import (
    ID_HEADER,
    LEGACY_SIGNATURE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    message_id,
    new_secret,
    signed_headers,
    standard_secret,
    verify,
    verify_legacy,
)

BODY = b'{"event":"job.succeeded"}'
MSG_ID = message_id("j1", "job.succeeded")
# An older key's secret: URL-safe base64 of 24 bytes, with both URL-safe-only characters in it.
OLD_SECRET = "whsec_" + base64.urlsafe_b64encode(bytes([0xFB, 0xFF]) * 12).decode()


def test_the_specs_example_signature() -> None:
    headers = signed_headers(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )
    assert headers[SIGNATURE_HEADER] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert headers[ID_HEADER] == "msg_p5jXN8AQM9LWM0D4loKWxJek"
    assert headers[TIMESTAMP_HEADER] == "1614265330"


def test_new_secrets_are_whsec_base64() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    assert standard_secret(secret) == secret
    assert new_secret() != secret


def test_message_ids_are_stable_per_job_and_event() -> None:
    assert message_id("j1", "job.succeeded") == MSG_ID
    assert message_id("j1", "job.failed") != MSG_ID
    assert message_id("j2", "job.succeeded") != MSG_ID


def test_the_standardwebhooks_library_verifies_a_delivery() -> None:
    secret = new_secret()
    headers = signed_headers(secret, MSG_ID, int(time.time()), BODY)
    assert Webhook(secret).verify(BODY, headers) == orjson.loads(BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY + b" ", headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, headers)
    old = signed_headers(secret, MSG_ID, int(time.time()) - 3600, BODY)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(BODY, old)


def test_signature_round_trip() -> None:
    secret = new_secret()
    headers = signed_headers(secret, MSG_ID, 1_700_000_000, BODY)
    assert verify(secret, headers, BODY, now=1_700_000_010)
    assert verify(secret, {name.upper(): value for name, value in headers.items()}, BODY, now=1_700_000_000)


def test_tampered_body_wrong_secret_replay_and_bad_headers_are_rejected() -> None:
    secret = new_secret()
    headers = signed_headers(secret, MSG_ID, 1_700_000_000, BODY)
    assert not verify(secret, headers, BODY + b" ", now=1_700_000_000)
    assert not verify(new_secret(), headers, BODY, now=1_700_000_000)
    assert not verify(secret, headers, BODY, now=1_700_000_000 + 301)
    assert not verify(secret, headers, BODY, now=1_700_000_000 - 301)
    assert not verify(
        secret, {**headers, ID_HEADER: message_id("j2", "job.succeeded")}, BODY, now=1_700_000_000
    )
    assert not verify(secret, {**headers, TIMESTAMP_HEADER: "1700000001"}, BODY, now=1_700_000_000)
    assert not verify(secret, {**headers, TIMESTAMP_HEADER: "abc"}, BODY, now=1_700_000_000)
    assert not verify(secret, {**headers, SIGNATURE_HEADER: "garbage"}, BODY, now=1_700_000_000)
    assert not verify(secret, {**headers, SIGNATURE_HEADER: "v1,ü"}, BODY, now=1_700_000_000)
    assert not verify(secret, {}, BODY, now=1_700_000_000)
    assert not verify(secret, headers, b"\xff", now=1_700_000_000)


def test_any_of_several_signatures_may_match() -> None:
    secret = new_secret()
    headers = signed_headers(secret, MSG_ID, 1_700_000_000, BODY)
    rotated = {**headers, SIGNATURE_HEADER: f"v1,AAAA {headers[SIGNATURE_HEADER]}"}
    assert verify(secret, rotated, BODY, now=1_700_000_000)


def test_older_url_safe_secrets_keep_working() -> None:
    headers = signed_headers(OLD_SECRET, MSG_ID, int(time.time()), BODY)
    assert verify(OLD_SECRET, headers, BODY)
    # Its key is the bytes the secret always spelled; rewritten to standard base64, any library reads it.
    assert Webhook(base64.urlsafe_b64decode(OLD_SECRET.removeprefix("whsec_"))).verify(BODY, headers)
    assert Webhook(standard_secret(OLD_SECRET)).verify(BODY, headers)


def test_deprecated_veil_signature_is_still_sent() -> None:
    for secret in (new_secret(), OLD_SECRET):
        header = signed_headers(secret, MSG_ID, 1_700_000_000, BODY)[LEGACY_SIGNATURE_HEADER]
        assert header.startswith("t=1700000000,v1=")
        assert verify_legacy(secret, header, BODY, now=1_700_000_010)
        assert not verify_legacy(secret, header, BODY + b" ", now=1_700_000_000)
        assert not verify_legacy(new_secret(), header, BODY, now=1_700_000_000)
        assert not verify_legacy(secret, header, BODY, now=1_700_000_000 + 301)
        assert not verify_legacy(secret, "garbage", BODY, now=1_700_000_000)
        assert not verify_legacy(secret, "t=abc,v1=00", BODY, now=1_700_000_000)
