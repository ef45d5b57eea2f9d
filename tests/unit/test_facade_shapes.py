"""Pure request/response conversions of the vendor facades (no network, no models)."""

from __future__ import annotations

import base64
import io
import re
from datetime import UTC, datetime

import pytest
from PIL import Image

from gateway import api4ai
from gateway.errors import http_status
from gateway.facade import Form, FormFile, job_failure, parse_bool, parse_int, timestamp_ms
from gateway.routes import plateblurer, platerecognizer, vehicore
from shared.errors import PayloadTooLargeError, ValidationError
from shared.jobs import (
    BlurOptions,
    Detection,
    Exclusion,
    ImageFormat,
    InputInfo,
    JobError,
    JobRecord,
    JobStatus,
    ResultInfo,
    Target,
)


def record(*detections: Detection, width: int = 1000, height: int = 500) -> JobRecord:
    return JobRecord(
        id="a" * 32,
        owner="k",
        status=JobStatus.SUCCEEDED,
        input=InputInfo(width=width, height=height, format=ImageFormat.JPEG),
        options=BlurOptions(),
        detections=list(detections),
        blurred_regions=[[1, 2, 3, 4]],
        result=ResultInfo(
            url="http://s3/x", expires_at=datetime.now(UTC), content_type="image/jpeg", key="results/x.jpg"
        ),
    )


FACE = Detection.model_validate({"class": "face", "score": 0.93, "box": [100, 50, 200, 180]})
PLATE = Detection.model_validate(
    {
        "class": "plate",
        "score": 0.81,
        "box": [500, 300, 700, 360],
        "polygon": [[500, 358], [500, 300], [698, 302], [700, 360]],  # BL first, as boxPoints gives
    }
)
WEAK_PLATE = Detection.model_validate({"class": "plate", "score": 0.15, "box": [10, 10, 60, 30]})


def form(**values: str) -> Form:
    return Form(values={name: [value] for name, value in values.items()})


# -- shared helpers ----------------------------------------------------------------------------------------


def test_helpers() -> None:
    moment = datetime(2020, 5, 2, 12, 28, 9, 989_123, tzinfo=UTC)
    assert timestamp_ms(moment) == "2020-05-02T12:28:09.989Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", timestamp_ms())
    assert parse_bool("split", "true") and not parse_bool("split", "0")
    with pytest.raises(ValidationError, match="split"):
        parse_bool("split", "maybe")
    with pytest.raises(ValidationError, match="whole number"):
        parse_int("faces", "2.5", 0, 10)
    failed = record().model_copy(
        update={"status": JobStatus.FAILED, "error": JobError(code="MODELS_NOT_READY", message="m")}
    )
    assert http_status(job_failure(failed)) == 503
    failed.error = JobError(code="DETECTION_FAILED", message="boom")
    assert (http_status(job_failure(failed)), job_failure(failed).code) == (500, "DETECTION_FAILED")
    failed.error = JobError(code="VALIDATION_ERROR", message="bad")
    assert http_status(job_failure(failed)) == 400


# -- VehiCore ----------------------------------------------------------------------------------------------


def test_vehicore_tuning_ranges() -> None:
    assert vehicore.tuning({}) == {}
    assert vehicore.tuning({"padding": "0.1", "shrink": "0.4", "blur": "80"}) == {
        "padding": 0.1,
        "shrink": 0.4,
        "blur": 80.0,
    }
    for name, value in [("padding", "0.09"), ("padding", "0.31"), ("shrink", "-0.1"), ("shrink", "0.41")]:
        with pytest.raises(ValidationError, match=name):
            vehicore.tuning({name: value})
    for value in ("0.5", "81", "abc"):
        with pytest.raises(ValidationError, match="blur"):
            vehicore.tuning({"blur": value})


def test_vehicore_metadata() -> None:
    meta = vehicore.metadata(record(FACE, PLATE), "all")
    assert meta["mode"] == "all" and meta["job_id"] == "a" * 32
    assert (meta["width"], meta["height"], meta["content_type"]) == (1000, 500, "image/jpeg")
    assert (meta["faces"], meta["plates"]) == (1, 1)
    assert meta["detections"] == [
        {"class": "face", "score": 0.93, "box": [100, 50, 200, 180]},
        {"class": "plate", "score": 0.81, "box": [500, 300, 700, 360], "polygon": PLATE.polygon},
    ]
    assert meta["params"] == {"padding": 0.15, "shrink": 0.0, "blur": None}
    assert vehicore.TARGETS["faces"] == (Target.FACES,)
    assert vehicore.TARGETS["plates"] == (Target.PLATES,)


# -- Plate Recognizer --------------------------------------------------------------------------------------


def test_platerecognizer_options_defaults() -> None:
    options, return_image = platerecognizer.parse_options(form(upload_url="http://x/a.jpg"))
    assert not return_image  # no faces/plates: detect only, "blur": null
    assert (options.face_strength, options.plate_strength) == (0, 0)
    assert options.targets == (Target.FACES, Target.PLATES)
    assert options.split_overlap == 20 and not options.split and options.exclusion is None


def test_platerecognizer_options_all() -> None:
    options, return_image = platerecognizer.parse_options(
        form(
            faces="3",
            plates="10",
            et="5",
            el="6",
            eb="7",
            er="8.5",
            xmin="1",
            ymin="2",
            xmax="30",
            ymax="40",
            split="true",
            overlap="35",
            copy_metadata="true",
            face_max_resolution="640",
            camera_id="cam-1",
            snapshot_filename="x.jpg",
            regions="fr",
            config='{"mode": "fast"}',
        ),
        logo_key="uploads/logo-1",
    )
    assert return_image
    assert (options.face_strength, options.plate_strength) == (3, 10)
    assert options.exclusion == Exclusion(top=5, left=6, bottom=7, right=8.5, box=(1, 2, 30, 40))
    assert options.split and options.split_overlap == 35
    assert options.keep_metadata and options.face_max_side == 640 and options.logo_key == "uploads/logo-1"


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"faces": "11"}, "faces"),
        ({"plates": "-1"}, "plates"),
        ({"faces": "x"}, "faces"),
        ({"et": "101"}, "et"),
        ({"er": "-1"}, "er"),
        ({"xmin": "1", "ymin": "2"}, "xmax"),
        ({"xmin": "5", "ymin": "2", "xmax": "5", "ymax": "9"}, "xmin < xmax"),
        ({"overlap": "95"}, "overlap"),
        ({"split": "perhaps"}, "split"),
        ({"copy_metadata": "2"}, "copy_metadata"),
        ({"face_max_resolution": "10"}, "face_max_resolution"),
        ({"config": "not json"}, "config"),
        ({"config": "[1]"}, "config"),
        ({"skip_regexp": "AB("}, "skip_regexp: 'AB\\(' is not a regular expression"),
        ({"skip_regexp": "A" * 101}, "skip_regexp: each pattern"),
        ({"mmc": "true"}, "unknown parameter mmc"),
    ],
)
def test_platerecognizer_bad_options(values: dict[str, str], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        platerecognizer.parse_options(form(**values))


def test_platerecognizer_response() -> None:
    image = b"\xff\xd8\xffblurred"
    body = platerecognizer.blur_response(record(FACE, PLATE), image, "demo.jpg", None)
    assert body["faces"] == [{"box": {"xmin": 100, "ymin": 50, "xmax": 200, "ymax": 180}, "score": 0.93}]
    assert body["plates"] == [
        {
            "polygon": [[500.0, 300.0], [698.0, 302.0], [700.0, 360.0], [500.0, 358.0]],  # TL clockwise
            "result": {"box": {"xmin": 500, "ymin": 300, "xmax": 700, "ymax": 360}, "dscore": 0.81},
        }
    ]
    assert body["blur"] == {
        "content_type": "image/jpeg",
        "filename": "demo.jpg",
        "base64": base64.b64encode(image).decode(),
    }
    assert platerecognizer.blur_response(record(FACE), None, "x.jpg", None)["blur"] is None
    # detections in an exclusion zone are not reported
    top_half = Exclusion(top=50)
    filtered = platerecognizer.blur_response(record(FACE, PLATE), None, "x", top_half)
    assert filtered["faces"] == [] and len(filtered["plates"]) == 1  # type: ignore[arg-type]
    no_polygon = Detection.model_validate({"class": "plate", "score": 0.5, "box": [1, 2, 3, 4]})
    assert platerecognizer.plate_polygon(no_polygon) == [[1.0, 2.0], [3.0, 2.0], [3.0, 4.0], [1.0, 4.0]]


def test_platerecognizer_filename() -> None:
    upload = FormFile(b"x", "car.jpg", "image/jpeg")
    assert platerecognizer.result_filename(form(), upload, None, "jpg") == "car.jpg"
    assert (
        platerecognizer.result_filename(form(), upload, "http://h/static/demo.jpg?x=1", "jpg") == "demo.jpg"
    )
    assert platerecognizer.result_filename(form(snapshot_filename="a/b.png"), upload, None, "jpg") == "b.png"
    assert platerecognizer.result_filename(form(), None, "http://h/", "png") == "image.png"


# -- PlateBlurer -------------------------------------------------------------------------------------------


def test_plateblurer_request() -> None:
    assert plateblurer.parse_request(
        b'{"base64_Photo_String": "aGk=", "photo_url": "NO", "boundingBoxCrop": "YES"}'
    ) == ("aGk=", None, True)
    assert plateblurer.parse_request(b'{"base64_Photo_String": "NO", "photo_url": "http://x/a.jpg"}') == (
        None,
        "http://x/a.jpg",
        False,
    )
    assert plateblurer.parse_request(b'{"photo_url": "http://x/a.jpg", "plate_output": "YES"}')[2]


@pytest.mark.parametrize(
    ("body", "cd"),
    [
        (b"", "1013"),
        (b"{}", "1013"),
        (b'{"base64_Photo_String": "NO", "photo_url": "NO"}', "1013"),
        (b"{nope", "1014"),
        (b"[]", "1014"),
        (b'{"base64_Photo_String": "aGk=", "photo_url": "http://x/a.jpg"}', "1014"),
        (b'{"base64_Photo_String": 5}', "1014"),
        (b'{"base64_Photo_String": "aGk=", "boundingBoxCrop": "MAYBE"}', "1014"),
        (b'{"base64_Photo_String": "aGk=", "extra": 1}', "1014"),
    ],
)
def test_plateblurer_bad_request(body: bytes, cd: str) -> None:
    with pytest.raises(ValidationError) as caught:
        plateblurer.parse_request(body)
    assert caught.value.code == cd


def test_plateblurer_basic_auth() -> None:
    def header(text: str) -> str:
        return "Basic " + base64.b64encode(text.encode()).decode()

    assert plateblurer.basic_password(header("anyone:veil_key")) == "veil_key"
    assert plateblurer.basic_password(header(":veil_key")) == "veil_key"
    assert plateblurer.basic_password(header("user:pa:ss")) == "pa:ss"
    for bad in ("", "Bearer x", "Basic", "Basic !!!", header("no-colon"), header("user:")):
        assert plateblurer.basic_password(bad) is None


def test_plateblurer_predictions_and_photo() -> None:
    rec = record(FACE, PLATE, WEAK_PLATE)
    plates = plateblurer.kept_plates(rec)
    assert plates == [PLATE]  # faces and predictions at or under 0.20 are dropped
    pred = plateblurer.prediction(PLATE, 1000, 500, "")
    assert pred == {
        "probability": 0.81,
        "tagId": plateblurer.TAG_ID,
        "tagName": "License Plate",
        "boundingBox": {"left": 0.5, "top": 0.6, "width": 0.2, "height": 0.12},
        "boundingBoxPhoto": "",
    }
    buffer = io.BytesIO()
    Image.new("RGB", (1000, 500), (0, 0, 0)).save(buffer, "JPEG")
    final, crops = plateblurer.draw_and_crop(buffer.getvalue(), "image/jpeg", [PLATE.box], crops=True)
    with Image.open(io.BytesIO(base64.b64decode(final))) as drawn:
        assert drawn.format == "JPEG" and drawn.size == (1000, 500)
        red = drawn.getpixel((500, 330))
        assert isinstance(red, tuple) and red[0] > 200 and red[1] < 60  # the box outline
    with Image.open(io.BytesIO(base64.b64decode(crops[0]))) as crop:
        assert crop.size == (200, 60)
    assert plateblurer.draw_and_crop(buffer.getvalue(), "image/jpeg", [PLATE.box], crops=False)[1] == []


# -- api4ai ------------------------------------------------------------------------------------------------


def test_api4ai_options() -> None:
    options, answer = api4ai.split_options({"objects_to_hide": "Faces only", "blur": 5}, 30)
    assert options == {"targets": ["faces"], "blur": 5}
    assert answer == api4ai.ResponseOptions(output="url", wait=0.0)
    options, answer = api4ai.split_options(
        {"objects_to_hide": "Licence plates only", "output": "base64", "wait": "true"}, 30
    )
    assert options == {"targets": ["plates"]} and answer == api4ai.ResponseOptions("base64", 30.0)
    assert api4ai.split_options({"objects_to_hide": "Everything", "wait": 100}, 30)[1].wait == 30
    assert api4ai.split_options({"objects_to_hide": "License plates only"}, 30)[0]["targets"] == ["plates"]
    bad_options: list[tuple[dict[str, object], str]] = [
        ({"objects_to_hide": "Cats only"}, "objects_to_hide"),
        ({"objects_to_hide": "Everything", "targets": "faces"}, "not both"),
        ({"output": "path"}, "output"),
        ({"wait": "soon"}, "wait"),
        ({"wait": -1}, "wait"),
    ]
    for bad, needle in bad_options:
        with pytest.raises(ValidationError, match=needle):
            api4ai.split_options(bad, 30)


def test_api4ai_image_bytes() -> None:
    assert api4ai.image_bytes({"type": "Buffer", "data": [255, 216, 255]}, 10) == b"\xff\xd8\xff"
    assert api4ai.image_bytes([255, 216], 10) == b"\xff\xd8"
    for bad in ({"type": "Blob", "data": [1]}, {"data": [1]}, [], [256], [1.5], ["a"], [True], "x"):
        with pytest.raises(ValidationError):
            api4ai.image_bytes(bad, 10)
    with pytest.raises(PayloadTooLargeError):
        api4ai.image_bytes([0] * 11, 10)


def test_api4ai_view() -> None:
    view = api4ai.view(record(FACE, PLATE))
    assert view == {
        "objects": [
            {"class": "Face", "box": {"x": 0.1, "y": 0.1, "w": 0.1, "h": 0.26}},
            {"class": "License plate", "box": {"x": 0.5, "y": 0.6, "w": 0.2, "h": 0.12}},
        ],
        "format": "JPEG",
        "width": 1000,
        "height": 500,
    }
    assert api4ai.view(record().model_copy(update={"status": JobStatus.QUEUED})) == {}
