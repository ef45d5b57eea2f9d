"""Licence plates from text: PP-OCR's text lines that are shaped like a plate and read like one.

A plate is a short line of large characters. Text regions (``workers.detectors.text``) on the same line
with small gaps are first joined (DB often splits "AB 123 CD" at its spaces), then kept as candidates when
their shape fits a plate's text (aspect, size, tilt). With a recogniser, each candidate's crop is read by
PP-OCR's CTC recogniser and kept only when the text is plate-like (:func:`plate_like`); without one, the
shape alone decides (more false positives: timestamps, phone numbers, badges).

The detection box is the text line grown to the plate around it: ``ACROSS`` of its length at each end and
``UPDOWN`` of its height above and below (a plate's border and margins).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from workers.detectors.base import BoxF, FloatArray, RawDetection, as_rgb
from workers.detectors.text import RotatedRect, TextDetector, TextRegion, rect_from_points
from workers.sessions import MetadataSession

# The shape of a plate's text line (rotated rectangle, photo pixels).
MIN_ASPECT = 1.2
MAX_ASPECT = 8.0
MIN_WIDTH = 16.0
MIN_HEIGHT = 8.0
MAX_ANGLE = 30.0  # degrees off horizontal
# The plate around its text.
ACROSS = 0.1
UPDOWN = 0.3
# Joining regions into lines: similar heights, overlapping vertically, gap under this many heights.
JOIN_GAP = 1.0
JOIN_HEIGHT_RATIO = 1.6
# Plate-like text.
MIN_CHARS = 4
MAX_CHARS = 10
SEPARATORS = frozenset(" -.·•")
FORBIDDEN = frozenset("/@%")  # dates, addresses and percentages, never on a plate
# Czech, Slovak, Austrian... plates carry a coat of arms or a seal between their groups, which the
# recogniser reads as ':'. One ':' counts as a separator in text with a letter; a time ("12:30", "9:05PM")
# never does.
TIME = re.compile(r"(?<![0-9A-Z])[0-9]{1,2}:[0-9]{2}(?![0-9])")
MAX_OTHER = 1  # other symbols tolerated (recogniser noise from screws, seals, stickers)
MIN_TEXT_SCORE = 0.5
REC_HEIGHT = 48
REC_MAX_WIDTH = 480  # 10:1; plates' text lines are well under that
REC_BATCH = 8


@dataclass(frozen=True)
class TextDetection(RawDetection):
    """A plate found from its text: ``score`` is the text detector's, ``text`` / ``text_score`` (fields of
    :class:`RawDetection`) what the recogniser read (None when it did not run)."""


def plate_like(text: str) -> bool:
    """4-10 letters and digits (separators " -." aside), at least one digit, and a letter or >= 5 digits;
    no '/' '@' '%', no time, at most one ':' (with a letter) and one other symbol."""
    text = unicodedata.normalize("NFKC", text).strip()  # full-width "：" is ":"
    if text.count(":") > 1 or TIME.search(text.upper()):
        return False
    letters = digits = other = 0
    for ch in text.replace(":", " "):
        if ch in FORBIDDEN:
            return False
        if ch.isdigit():
            digits += 1
        elif ch.isalpha():
            letters += 1
        elif ch not in SEPARATORS:
            other += 1
    chars = letters + digits
    if not MIN_CHARS <= chars <= MAX_CHARS or other > MAX_OTHER:
        return False
    if ":" in text and letters == 0:
        return False
    return digits >= 1 and (letters >= 1 or digits >= 5)


def plate_shaped(rect: RotatedRect) -> bool:
    """Whether a text line's rectangle could be a plate's: aspect, size and tilt."""
    w, h = rect.width, rect.height
    if h <= 0 or w < MIN_WIDTH or h < MIN_HEIGHT:
        return False
    return MIN_ASPECT <= w / h <= MAX_ASPECT and abs(rect.angle) <= MAX_ANGLE


def line_groups(regions: Sequence[TextRegion]) -> list[list[TextRegion]]:
    """The regions grouped into lines, left to right: a region joins a line when it has a similar height,
    overlaps the line's last region vertically and starts less than ``JOIN_GAP`` heights after it."""
    items = sorted(regions, key=lambda r: r.rect.cx - r.rect.width / 2)
    groups: list[list[TextRegion]] = []
    for region in items:
        for group in groups:
            if _joins(group[-1].rect, region.rect):
                group.append(region)
                break
        else:
            groups.append([region])
    return groups


def joined(group: Sequence[TextRegion]) -> TextRegion:
    """One region around a line's regions (score: the lowest of them)."""
    if len(group) == 1:
        return group[0]
    points = np.concatenate([g.rect.corners() for g in group])
    return TextRegion(rect_from_points(points), min(g.score for g in group))


def plate_candidates(regions: Sequence[TextRegion]) -> list[TextRegion]:
    """Each line joined when the whole line is plate-shaped, else its plate-shaped parts."""
    found: list[TextRegion] = []
    for group in line_groups(regions):
        line = joined(group)
        if plate_shaped(line.rect):
            found.append(line)
        elif len(group) > 1:
            found.extend(part for part in group if plate_shaped(part.rect))
    return found


def _joins(left: RotatedRect, right: RotatedRect) -> bool:
    hl, hr = left.height, right.height
    if min(hl, hr) <= 0 or max(hl, hr) / min(hl, hr) > JOIN_HEIGHT_RATIO:
        return False
    if abs(left.angle) > MAX_ANGLE or abs(right.angle) > MAX_ANGLE:
        return False
    _, ly1, lx2, ly2 = left.bounds()
    rx1, ry1, rx2, ry2 = right.bounds()
    overlap = min(ly2, ry2) - max(ly1, ry1)
    if overlap < 0.5 * min(ly2 - ly1, ry2 - ry1):
        return False
    gap = rx1 - lx2
    return gap <= JOIN_GAP * max(hl, hr) and rx2 > lx2


def crop_line(image: npt.NDArray[np.uint8], rect: RotatedRect) -> npt.NDArray[np.uint8]:
    """The rectangle's pixels, straightened: width along x (replicated edge outside the photo)."""
    w, h = max(1, round(rect.width)), max(1, round(rect.height))
    src = rect.corners()
    dst = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(src, dst)
    crop = cv2.warpPerspective(image, matrix, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    return np.asarray(crop, dtype=np.uint8)


def charset(metadata: str) -> list[str]:
    """The recogniser's classes from its ``character`` metadata (one per line): the CTC blank, the listed
    characters, a space."""
    return ["", *metadata.splitlines(), " "]


def ctc_decode(probs: FloatArray, characters: Sequence[str]) -> tuple[str, float]:
    """Greedy CTC over T x C class probabilities: best class per step, repeats merged, blanks (class 0)
    dropped. Score: the mean probability of the kept characters (0 for nothing read)."""
    best = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    keep = best != 0
    keep[1:] &= best[1:] != best[:-1]
    if not keep.any():
        return "", 0.0
    text = "".join(characters[int(i)] for i in best[keep])
    return text, float(conf[keep].mean())


def on_known(box: BoxF, known: Sequence[BoxF]) -> bool:
    """Whether ``box`` overlaps one of ``known`` (IoU >= 0.1) or lies mostly (>= 70 %) inside one."""
    x1, y1, x2, y2 = box
    area = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    for kx1, ky1, kx2, ky2 in known:
        iw = min(x2, kx2) - max(x1, kx1)
        ih = min(y2, ky2) - max(y1, ky1)
        if iw <= 0 or ih <= 0:
            continue
        inter = iw * ih
        union = area + (kx2 - kx1) * (ky2 - ky1) - inter
        if inter >= 0.7 * area or (union > 0 and inter / union >= 0.1):
            return True
    return False


class TextRecognizer:
    """Wraps an onnxruntime session of PP-OCR's CTC recogniser (``x``: N x 3 x 48 x W, BGR,
    ``(x / 255 - 0.5) / 0.5``; output N x W/8 x classes, probabilities). The characters come from the
    model's ``character`` metadata unless given."""

    def __init__(self, session: MetadataSession, characters: Sequence[str] | None = None) -> None:
        self.session = session
        self._input_name: str = session.get_inputs()[0].name
        if characters is None:
            meta = session.get_modelmeta().custom_metadata_map
            if "character" not in meta:
                raise ValueError("recogniser has no 'character' metadata; pass the characters")
            characters = charset(meta["character"])
        self.characters = list(characters)

    def read(self, crops: Sequence[npt.NDArray[np.uint8]]) -> list[tuple[str, float]]:
        """Each RGB crop's text and score, in order."""
        results: list[tuple[str, float]] = [("", 0.0)] * len(crops)
        order = sorted(range(len(crops)), key=lambda i: crops[i].shape[1] / max(1, crops[i].shape[0]))
        for start in range(0, len(order), REC_BATCH):
            batch = order[start : start + REC_BATCH]
            widths = [_rec_width(crops[i]) for i in batch]
            blob = np.zeros((len(batch), 3, REC_HEIGHT, max(widths)), dtype=np.float32)
            for row, (i, width) in enumerate(zip(batch, widths, strict=True)):
                resized = cv2.resize(crops[i], (width, REC_HEIGHT), interpolation=cv2.INTER_LINEAR)
                blob[row, :, :, :width] = resized[:, :, ::-1].transpose(2, 0, 1) * (2.0 / 255.0) - 1.0
            (out,) = self.session.run(None, {self._input_name: blob})
            for row, i in enumerate(batch):
                results[i] = ctc_decode(np.asarray(out[row], dtype=np.float32), self.characters)
        return results


def _rec_width(crop: npt.NDArray[np.uint8]) -> int:
    h, w = crop.shape[:2]
    return int(min(REC_MAX_WIDTH, max(REC_HEIGHT // 2, math.ceil(REC_HEIGHT * w / max(1, h)))))


class TextPlateDetector:
    """Plates from text lines: detection, joining, the shape filter and (when a recogniser is given) the
    plate-like text rule. Returns :class:`TextDetection` objects labelled ``plate``."""

    def __init__(
        self,
        text: TextDetector,
        recognizer: TextRecognizer | None = None,
        *,
        min_text_score: float = MIN_TEXT_SCORE,
    ) -> None:
        self.text = text
        self.recognizer = recognizer
        self.min_text_score = min_text_score

    def candidates(self, image_rgb: npt.NDArray[np.uint8]) -> list[TextRegion]:
        """Text lines shaped like a plate's, before any reading."""
        return plate_candidates(self.text.detect(image_rgb))

    def detect(
        self,
        image_rgb: npt.NDArray[np.uint8],
        min_score: float = 0.0,
        *,
        read: bool | None = None,
        known: Sequence[BoxF] = (),
        read_known: bool = False,
    ) -> list[TextDetection]:
        """Plates in pixels of ``image_rgb``. ``read`` (default: whether there is a recogniser) keeps only
        candidates whose text is plate-like and scores at least ``min_text_score``. Candidates on a plate
        already ``known`` (another detector's boxes) are left out before reading: nothing to add there;
        unless ``read_known`` (and reading): then they are read too, so the known plate's text is known
        (the caller fuses them with the known plates, :mod:`workers.detectors.fusion`)."""
        image = as_rgb(image_rgb)
        h, w = image.shape[:2]
        reading = self.recognizer is not None if read is None else read
        keep_known = reading and read_known
        found = [
            c
            for c in self.candidates(image)
            if c.score >= min_score
            and (keep_known or not on_known(c.rect.grown(ACROSS, UPDOWN).bounds(), known))
        ]
        texts: list[tuple[str, float] | None] = [None] * len(found)
        if reading:
            if self.recognizer is None:
                raise ValueError("reading needs a recogniser")
            texts = list(self.recognizer.read([crop_line(image, c.rect) for c in found]))
        out: list[TextDetection] = []
        for candidate, read_text in zip(found, texts, strict=True):
            if read_text is not None:
                text, text_score = read_text
                if text_score < self.min_text_score or not plate_like(text):
                    continue
            plate = candidate.rect.grown(ACROSS, UPDOWN)
            polygon = tuple((min(max(x, 0.0), w), min(max(y, 0.0), h)) for x, y in plate.polygon())
            xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
            box = (min(xs), min(ys), max(xs), max(ys))
            if box[2] - box[0] < 1 or box[3] - box[1] < 1:
                continue
            out.append(
                TextDetection(
                    "plate",
                    candidate.score,
                    box,
                    polygon,
                    text=None if read_text is None else read_text[0],
                    text_score=None if read_text is None else read_text[1],
                )
            )
        return out
