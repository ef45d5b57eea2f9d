"""The bench's prebuilt upload body is a well-formed form: the image and the fields come back intact."""

from __future__ import annotations

import email.parser
import email.policy

from cli.client import multipart_body


def test_body_parses_back_into_the_image_and_fields() -> None:
    image = bytes(range(256)) * 40 + b"\r\n--not-a-boundary\r\n"
    body, content_type = multipart_body('odd "name".jpg', image, {"targets": "faces,plates", "wait": "30"})
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    parts = list(message.iter_parts())
    assert [part.get_param("name", header="content-disposition") for part in parts] == [
        "image",
        "targets",
        "wait",
    ]
    assert parts[0].get_filename() == "odd %22name%22.jpg"
    assert parts[0].get_payload(decode=True) == image
    assert [part.get_payload() for part in parts[1:]] == ["faces,plates", "30"]
