from __future__ import annotations

from shared.webhooks import sign, verify

BODY = b'{"event":"job.succeeded"}'


def test_signature_round_trip() -> None:
    header = sign("whsec_test", 1_700_000_000, BODY)
    assert header.startswith("t=1700000000,v1=")
    assert verify("whsec_test", header, BODY, now=1_700_000_010)


def test_tampered_body_wrong_secret_and_replay_are_rejected() -> None:
    header = sign("whsec_test", 1_700_000_000, BODY)
    assert not verify("whsec_test", header, BODY + b" ", now=1_700_000_000)
    assert not verify("whsec_other", header, BODY, now=1_700_000_000)
    assert not verify("whsec_test", header, BODY, now=1_700_000_000 + 301)
    assert not verify("whsec_test", "garbage", BODY, now=1_700_000_000)
    assert not verify("whsec_test", "t=abc,v1=00", BODY, now=1_700_000_000)
