"""Store keys and prefixes named by clients: accepted only in the canonical form the store itself uses, so
a check on the key sees exactly the object the store will serve."""

from __future__ import annotations

import pytest

from shared.errors import ValidationError
from shared.objectkeys import check_key, check_prefix, folders_overlap, is_folder


@pytest.mark.parametrize(
    "key",
    [
        "a.png",
        "photos/2026/IMG_0001.JPG",
        "a b/c-d_e~f.webp",
        "ünï/cödé.png",
        "x" * 1024,
        "..a/b..",
        ".hidden",
    ],
)
def test_canonical_keys_pass_unchanged(key: str) -> None:
    assert check_key(key, "s3.key") == key


@pytest.mark.parametrize(
    ("key", "needle"),
    [
        ("", "empty"),
        ("/uploads/x", "start with '/'"),
        ("//uploads/x", "start with '/'"),
        ("uploads//x", "empty segment"),
        ("uploads/x/", "not a folder"),
        ("./x", "'.' or '..'"),
        ("x/./y", "'.' or '..'"),
        ("x/../y", "'.' or '..'"),
        ("uploads/../uploads/x", "'.' or '..'"),
        ("..", "'.' or '..'"),
        ("x/..", "'.' or '..'"),
        ("a\\b", "backslash"),
        ("a\x00b", "control character"),
        ("a\nb", "control character"),
        ("a\x7fb", "control character"),
        ("a\x85b", "control character"),
        ("x" * 1025, "too long"),
        ("é" * 513, "too long"),  # 1026 bytes in UTF-8
    ],
)
def test_other_keys_are_refused(key: str, needle: str) -> None:
    with pytest.raises(ValidationError, match=r"s3\.key") as raised:
        check_key(key, "s3.key")
    assert needle in raised.value.message


@pytest.mark.parametrize("prefix", ["", "claims/", "claims/2026/11/", "photos/IMG_", "a"])
def test_canonical_prefixes_pass_unchanged(prefix: str) -> None:
    assert check_prefix(prefix, "s3.prefix") == prefix


@pytest.mark.parametrize(
    "prefix",
    [
        "/",
        "/claims/",
        "claims//",
        "claims//x/",
        "./",
        "claims/./",
        "../veil/",
        "claims/../",
        "claims/..",
        "claims/.",
        "a\\b/",
        "a\tb/",
    ],
)
def test_other_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValidationError, match=r"output\.prefix"):
        check_prefix(prefix, "output.prefix")


def test_lone_surrogates_are_refused_and_folders_told_apart() -> None:
    with pytest.raises(ValidationError, match="control character"):
        check_key("a\ud800b", "s3.key")
    assert is_folder("") and is_folder("claims/") and is_folder("claims/2026/")
    assert not is_folder("claims") and not is_folder("photos/IMG_")


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        (("in", "photos/"), ("in", "photos/blurred/"), True),  # inside
        (("in", "photos/blurred/"), ("in", "photos/"), True),  # contains
        (("in", ""), ("in", "blurred/"), True),  # the whole bucket
        (("in", "photos/"), ("in", "blurred/"), False),  # side by side
        (("in", "photos/"), ("out", "photos/"), False),  # another bucket
    ],
)
def test_folders_overlap(a: tuple[str, str], b: tuple[str, str], overlap: bool) -> None:
    assert folders_overlap(*a, *b) is overlap
