"""``veil blur``'s walk: relative paths, images told by their bytes, the output folder left out, and the
inputs it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.blur_files import InputError, check_out_dir, find_inputs, output_rel
from shared.jobs import ImageFormat

JPEG = b"\xff\xd8\xff\xe0" + b"\0" * 20
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 20
WEBP = b"RIFF\0\0\0\0WEBPVP8 " + b"\0" * 20


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_walks_nested_folders_and_tells_images_by_their_bytes(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    _write(photos / "a.jpg", JPEG)
    _write(photos / "2024" / "b.png", PNG)
    _write(photos / "2024" / "deep" / "c.webp", WEBP)
    _write(photos / "2024" / "really_a_png.txt", PNG)  # bytes decide, not names
    _write(photos / "notes.jpg", b"just text")
    _write(photos / "empty.png", b"")

    inputs = find_inputs([photos], tmp_path / "out")

    assert [i.rel for i in inputs.images] == [
        "a.jpg",
        "2024/b.png",
        "2024/really_a_png.txt",
        "2024/deep/c.webp",
    ]
    assert sorted(i.rel for i in inputs.others) == ["empty.png", "notes.jpg"]
    first = inputs.images[0]
    assert first.path == photos / "a.jpg"
    assert first.size == len(JPEG)
    assert first.mtime_ns == (photos / "a.jpg").stat().st_mtime_ns
    assert inputs.unreadable == []


def test_a_file_given_by_name_keeps_its_name(tmp_path: Path) -> None:
    photo = _write(tmp_path / "x" / "y" / "car.jpg", JPEG)
    inputs = find_inputs([photo], tmp_path / "out")
    assert [i.rel for i in inputs.images] == ["car.jpg"]


def test_the_output_folder_inside_an_input_is_not_walked(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    _write(photos / "a.jpg", JPEG)
    _write(photos / "blurred" / "a.jpg", JPEG)  # a previous run's result
    inputs = find_inputs([photos], photos / "blurred")
    assert [i.rel for i in inputs.images] == ["a.jpg"]


def test_two_inputs_with_one_output_path_are_refused(tmp_path: Path) -> None:
    _write(tmp_path / "one" / "a.jpg", JPEG)
    _write(tmp_path / "two" / "a.jpg", JPEG)
    with pytest.raises(InputError, match=r"would both be written to a\.jpg"):
        find_inputs([tmp_path / "one", tmp_path / "two"], tmp_path / "out")


def test_a_missing_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or folder"):
        find_inputs([tmp_path / "nowhere"], tmp_path / "out")


def test_unreadable_files_are_listed_not_fatal(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    _write(photos / "a.jpg", JPEG)
    (photos / "gone.jpg").symlink_to(tmp_path / "missing.jpg")  # a broken link
    inputs = find_inputs([photos], tmp_path / "out")
    assert [i.rel for i in inputs.images] == ["a.jpg"]
    assert [rel for rel, _why in inputs.unreadable] == ["gone.jpg"]


@pytest.mark.parametrize("out", ["photos", ".", "photos/.."])
def test_an_output_folder_holding_the_inputs_is_refused(tmp_path: Path, out: str) -> None:
    photos = tmp_path / "photos"
    _write(photos / "a.jpg", JPEG)
    with pytest.raises(InputError, match="holds the input"):
        check_out_dir([photos], tmp_path / out)


def test_an_output_folder_beside_or_inside_the_inputs_is_fine(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    _write(photos / "a.jpg", JPEG)
    check_out_dir([photos], tmp_path / "blurred")
    check_out_dir([photos], photos / "blurred")


@pytest.mark.parametrize(
    ("rel", "fmt", "expected"),
    [
        ("a/b.jpg", ImageFormat.JPEG, "a/b.jpg"),
        ("b.JPEG", ImageFormat.JPEG, "b.JPEG"),
        ("b.png", ImageFormat.PNG, "b.png"),
        ("b.jpg", ImageFormat.PNG, "b.jpg.png"),  # a PNG named .jpg: the result says what it is
        ("IMG_0001", ImageFormat.JPEG, "IMG_0001.jpg"),
        ("c.txt", ImageFormat.WEBP, "c.txt.webp"),
    ],
)
def test_output_names_keep_the_tree_and_say_the_format(rel: str, fmt: ImageFormat, expected: str) -> None:
    assert output_rel(rel, fmt) == expected
