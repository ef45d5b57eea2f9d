"""Object keys and key prefixes that clients name (``{"s3": {"bucket", "key"}}`` inputs, bulk ``s3.prefix``
and ``output.prefix``): accepted only in the canonical form, never rewritten.

A store reached by URL path (SeaweedFS, and any S3 behind a normalising proxy) serves ``/a``, ``//a``,
``./a`` and ``x/../a`` as the object ``a``, and a path-style ``../other-bucket/a`` from another bucket
altogether. A check on the key as sent would then approve one object while the store serves another; so
keys that any layer could rewrite are refused (400), and what is checked is exactly what the store sees.

Refused: the empty key, a leading ``/``, empty segments (``//``, a trailing ``/``), ``.`` and ``..``
segments, backslashes (some stores and proxies read them as ``/``), control characters, and keys over
S3's 1024 bytes. A prefix may be empty, and may end with ``/`` (a folder) or with part of a name
(``photos/IMG_``).
"""

from __future__ import annotations

import unicodedata

from shared.errors import ValidationError

MAX_KEY_BYTES = 1024  # S3's limit on a key, in UTF-8


def check_key(key: str, field: str) -> str:
    """``key`` unchanged when it is canonical; :class:`ValidationError` naming ``field`` otherwise."""
    if not key:
        raise ValidationError(f"{field} is empty")
    _check(key, field)
    if key.endswith("/"):
        raise ValidationError(f"{field} must name an object, not a folder (it ends with '/'): {key!r}")
    return key


def check_prefix(prefix: str, field: str) -> str:
    """``prefix`` unchanged when it is empty or canonical (see the module's text); 400 otherwise."""
    if prefix:
        _check(prefix, field)
    return prefix


def is_folder(prefix: str) -> bool:
    """Whether ``prefix`` names a whole folder (or the whole bucket), not the start of a name."""
    return not prefix or prefix.endswith("/")


def folders_overlap(bucket: str, prefix: str, other_bucket: str, other_prefix: str) -> bool:
    """Whether two folders (canonical folder prefixes) share objects: one lies in the other. Blurred copies
    written into a folder that overlaps their sources could land on an original or be read as one."""
    return bucket == other_bucket and (prefix.startswith(other_prefix) or other_prefix.startswith(prefix))


def _check(value: str, field: str) -> None:
    if len(value.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise ValidationError(f"{field} is too long (at most {MAX_KEY_BYTES} bytes)")
    if value.startswith("/"):
        raise ValidationError(f"{field} must not start with '/': {value!r}")
    if "//" in value:
        raise ValidationError(f"{field} must not contain an empty segment ('//'): {value!r}")
    if "\\" in value:
        raise ValidationError(f"{field} must not contain a backslash: {value!r}")
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in value):
        raise ValidationError(f"{field} must not contain a control character: {value!r}")
    if any(segment in (".", "..") for segment in value.split("/")):
        raise ValidationError(f"{field} must not contain '.' or '..' segments: {value!r}")
