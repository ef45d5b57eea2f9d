"""JPEG's header segments, walked without decoding: the one walk behind the gateway's upload check and the
worker's size probe and EXIF reader. Pure bytes in, values out."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

START_OF_SCAN = 0xDA
END_OF_IMAGE = 0xD9


class Segment(NamedTuple):
    marker: int
    offset: int  # of the segment's 0xFF marker byte
    length: int  # of the segment after its marker (length field included); 0 for markers without one

    @property
    def end(self) -> int:
        return self.offset + 2 + self.length


def header_segments(data: bytes) -> Iterator[Segment]:
    """The segments after SOI up to and including the first start-of-scan (or end of image); stops early
    at anything that is not a well-formed segment (truncation, garbage, a length below 2)."""
    pos, size = 2, len(data)
    while pos + 4 <= size:
        if data[pos] != 0xFF:
            return
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD9:  # markers without a length
            yield Segment(marker, pos, 0)
            if marker == END_OF_IMAGE:
                return
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2:
            return
        yield Segment(marker, pos, length)
        if marker == START_OF_SCAN:
            return
        pos += 2 + length
