"""One image through the whole worker core: decode, detect, blur, encode. Synchronous and pure.

Fails closed: if a detector fails, the job fails; bytes are only returned after every requested detector
ran and every detection's region was blurred.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TypeVar

import cv2
import numpy as np
import numpy.typing as npt

from shared.errors import DetectionError, VeilError
from shared.jobs import BlurOptions, ImageFormat, Target
from workers import imageops, metadata, overlays, tiling
from workers.detection import (
    DetectionConfig,
    Expired,
    added,
    checked_each,
    deadline_check,
    head_cover,
    plate_cover,
    run_detector,
    timed,
)
from workers.detectors import faces as faces_mod
from workers.detectors import fusion
from workers.detectors import plates as plates_mod
from workers.detectors.base import BoxF, RawDetection
from workers.detectors.faces import FaceDetector
from workers.detectors.plate_text import TextPlateDetector
from workers.detectors.plates import PlateDetector
from workers.detectors.retinaface import RetinaFaceDetector
from workers.detectors.yunet import YuNetDetector
from workers.imageops import Region

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class AnonymizeResult:
    image: bytes  # encoded in the input's format, without metadata
    content_type: str
    format: ImageFormat
    width: int  # of the upright image
    height: int
    detections: list[RawDetection]
    regions: list[Region]  # exactly what was blurred; x2/y2 exclusive
    # decode, detect_faces, detect_plates (when run), blur, encode; with a second source for a class, each
    # source's own time too (``source.centerface``, ``source.retinaface``, ``source.platedet``,
    # ``source.text``: parts of detect_faces / detect_plates, not stages of their own).
    timings_ms: dict[str, float]


@dataclass(frozen=True)
class Detected:
    """An image decoded and searched, before any pixel changes."""

    image: imageops.DecodedImage
    faces: list[RawDetection]
    plates: list[RawDetection]
    timings_ms: dict[str, float]  # decode, detect_faces, detect_plates (when run), source.* (see above)


class Anonymizer:
    """Holds the detectors; :meth:`run` is safe to call from one thread at a time per instance.

    Faces: CenterFace, plus RetinaFace when ``retinaface`` is given. Plates: platedet (``plates``; None in
    the ``permissive`` profile), plus plates from their text when ``plate_text`` is given. Each class is
    the union of its sources (:mod:`workers.detectors.fusion`); every detection records its ``sources``.
    """

    def __init__(
        self,
        faces: FaceDetector,
        plates: PlateDetector | None,
        providers: list[str] | None = None,
        config: DetectionConfig | None = None,
        *,
        retinaface: RetinaFaceDetector | None = None,
        plate_text: TextPlateDetector | None = None,
        yunet: YuNetDetector | None = None,
    ) -> None:
        config = config if config is not None else DetectionConfig()
        if plates is None and (plate_text is None or config.plate_text == "off"):
            raise ValueError("no plate detector: give platedet or plates from text (plate_text on)")
        self.faces = faces
        self.plates = plates
        self.retinaface = retinaface
        self.yunet = yunet
        self.plate_text = plate_text if config.plate_text != "off" else None
        self.providers: list[str] = providers if providers is not None else ["CPUExecutionProvider"]
        self.config = config

    @property
    def sources(self) -> dict[str, list[str]]:
        """The detectors each class is found with, in the order they run."""
        return {
            "face": [
                "centerface",
                *(["retinaface"] if self.retinaface is not None else []),
                *(["yunet"] if self.yunet is not None else []),
            ],
            "plate": [
                *(["platedet"] if self.plates is not None else []),
                *(["text"] if self.plate_text is not None else []),
            ],
        }

    def warm_up(self) -> None:
        """Run each model once so the first job does not pay for allocations and kernel selection."""
        rng = np.random.default_rng(0)
        image = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
        self.faces.detect(image, self.config.face_min_score, faces_mod.DEFAULT_MAX_SIDE)
        if self.retinaface is not None:
            self.retinaface.detect(image, self.config.retinaface_min_score, faces_mod.DEFAULT_MAX_SIDE)
        if self.yunet is not None:
            self.yunet.detect(image, self.config.yunet_min_score, faces_mod.DEFAULT_MAX_SIDE)
        if self.plates is not None:
            self.plates.detect(image, self.config.plate_min_score)
        if self.plate_text is not None:
            # Random pixels hold no text: read one crop too, so the recogniser is warm as well.
            self.plate_text.detect(image, 0.0)
            if self.plate_text.recognizer is not None:
                self.plate_text.recognizer.read([image[:48, :160]])

    def detect_faces(
        self,
        rgb: npt.NDArray[np.uint8],
        min_score: float,
        max_side: int,
        expired: Expired | None = None,
        timings: dict[str, float] | None = None,
    ) -> list[RawDetection]:
        """CenterFace on the whole image (zoomed up to ``face_upscale``), plus native-resolution tiles for
        large images; with RetinaFace, its faces on the whole image (zoomed up to ``retinaface_upscale``,
        at a score of at least ``retinaface_min_score``) fused in."""
        cfg = self.config
        check = deadline_check(expired)
        check()
        second = self.retinaface is not None or self.yunet is not None
        with added(timings if second else None, "centerface"):
            found = self.faces.detect(rgb, min_score, max_side, upscale=cfg.face_upscale)
            height, width = rgb.shape[:2]
            if cfg.face_tiles and max(height, width) > max_side:
                tiles = tiling.tile_grid(width, height, max_side, round(max_side * cfg.tile_overlap))
                found += tiling.detect_tiled(
                    rgb, checked_each(check, lambda crop: self.faces.detect(crop, min_score, max_side)), tiles
                )
                found = tiling.merge(found, faces_mod.NMS_IOU)
        sources: list[tuple[str, list[RawDetection]]] = [("centerface", found)]
        if self.retinaface is not None:
            check()
            with added(timings, "retinaface"):
                score = max(min_score, cfg.retinaface_min_score)
                extra = self.retinaface.detect(rgb, score, max_side, upscale=cfg.retinaface_upscale)
            sources.append(("retinaface", extra))
        if self.yunet is not None:
            check()
            with added(timings, "yunet"):
                score = max(min_score, cfg.yunet_min_score)
                extra = self.yunet.detect(rgb, score, max_side, upscale=cfg.yunet_upscale)
            sources.append(("yunet", extra))
        return fusion.fuse(sources, fusion.FACE_MATCH)

    def detect_plates(
        self,
        rgb: npt.NDArray[np.uint8],
        min_score: float,
        expired: Expired | None = None,
        timings: dict[str, float] | None = None,
    ) -> list[RawDetection]:
        """platedet on the whole image, plus overlapping tiles of ``plate_tile_side`` pixels for larger
        images; with plates from text, those (at a detector score of at least ``plate_text_min_score``)
        fused in: platedet's plates are passed as known, so text on them only adds its reading."""
        cfg = self.config
        check = deadline_check(expired)
        check()
        second = self.plates is not None and self.plate_text is not None
        found: list[RawDetection] = []
        if self.plates is not None:
            plates = self.plates
            with added(timings if second else None, "platedet"):
                found = plates.detect(rgb, min_score)
                height, width = rgb.shape[:2]
                side = cfg.plate_tile_side
                if cfg.plate_tiles and max(height, width) > side:
                    tiles = tiling.tile_grid(width, height, side, round(side * cfg.tile_overlap))
                    found += tiling.detect_tiled(
                        rgb, checked_each(check, lambda crop: plates.detect(crop, min_score)), tiles
                    )
                    found = tiling.merge(found, plates_mod.NMS_IOU)
        sources: list[tuple[str, list[RawDetection]]] = [("platedet", found)]
        text = self.plate_text
        if text is not None and (cfg.plate_text == "on" or not found):
            check()
            with added(timings if second else None, "text"):
                extra = text.detect(
                    rgb,
                    max(min_score, cfg.plate_text_min_score),
                    known=[plate_cover(d) for d in found],
                    read_known=cfg.plate_text_read_known,
                )
            sources.append(("text", list(extra)))
        return fusion.fuse(sources, fusion.PLATE_MATCH)

    def detect(
        self,
        data: bytes,
        options: BlurOptions,
        *,
        max_pixels: int,
        face_max_side: int,
        expired: Expired | None = None,
    ) -> Detected:
        """Decode and run the detectors ``options.targets`` asks for: the model part of :meth:`run`, and
        all of what ``veil bench`` times as the model-only loop. Raises :class:`DetectionTimeoutError`
        before any step (decode, each model pass or tile) that starts once ``expired()`` says so."""
        timings: dict[str, float] = {}
        check = deadline_check(expired)
        check()
        with timed(timings, "decode"):
            image = imageops.decode(data, max_pixels=max_pixels)  # ValidationError / PayloadTooLargeError
            rgb = np.ascontiguousarray(cv2.cvtColor(image.bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)

        # Panoramas (`split`): overlapping full-height chunks run as extra tiles besides the usual passes.
        chunks = (
            overlays.split_chunks(image.width, image.height, options.split_overlap, options.split_chunks)
            if options.split
            else []
        )
        split_tiles = [(x1, 0, x2, image.height) for x1, x2 in chunks] if len(chunks) > 1 else []

        def search(what: str, detect: tiling.Detect, iou: float) -> list[RawDetection]:
            def passes() -> list[RawDetection]:
                found = detect(rgb)
                if split_tiles:
                    found = tiling.merge(
                        found + tiling.detect_tiled(rgb, checked_each(check, detect), split_tiles), iou
                    )
                return found

            found = run_detector(what, passes)
            return overlays.exclusion_filter(found, options.exclusion, image.width, image.height)

        faces: list[RawDetection] = []
        plates: list[RawDetection] = []
        sources_ms: dict[str, float] = {}
        if Target.FACES in options.targets:
            score = options.min_score if options.min_score is not None else self.config.face_min_score
            side = options.face_max_side or face_max_side
            with timed(timings, "detect_faces"):
                faces = search(
                    "face",
                    lambda px: self.detect_faces(px, score, side, expired, sources_ms),
                    faces_mod.NMS_IOU,
                )
        if Target.PLATES in options.targets:
            score = options.min_score if options.min_score is not None else self.config.plate_min_score
            with timed(timings, "detect_plates"):
                plates = search(
                    "plate", lambda px: self.detect_plates(px, score, expired, sources_ms), plates_mod.NMS_IOU
                )
        timings.update(sources_ms)
        return Detected(image=image, faces=faces, plates=plates, timings_ms=timings)

    def run(
        self,
        data: bytes,
        options: BlurOptions,
        *,
        max_pixels: int,
        face_max_side: int,
        logo: bytes | None = None,
        expired: Expired | None = None,
    ) -> AnonymizeResult:
        """Decode, detect what ``options.targets`` asks for, blur (or, at strength 0, only report), put the
        ``logo`` on plates, encode. Raises :class:`DetectionError` rather than return un-blurred bytes, and
        :class:`DetectionTimeoutError` between steps once ``expired()`` says the time is up."""
        check = deadline_check(expired)
        check()
        logo_bgra = overlays.decode_logo(logo) if logo is not None else None
        found = self.detect(
            data, options, max_pixels=max_pixels, face_max_side=face_max_side, expired=expired
        )
        image, faces, plates, timings = found.image, found.faces, found.plates, found.timings_ms
        # Plates whose read text matches the job's skip_regexp are reported (skipped) but left alone.
        plates = fusion.skip_matching(plates, options.skip_patterns())
        hidden = [det for det in plates if not det.skipped]

        try:
            check()
            with timed(timings, "blur"):
                margin = self.config.face_head_margin
                face_regions = self._regions([head_cover(d.box, margin) for d in faces], options, image)
                plate_regions = self._regions([plate_cover(d) for d in hidden], options, image)
                blurs = _blurs(face_regions, options.face_strength, options.blur)
                blurs += _blurs(plate_regions, options.plate_strength, options.blur)
                pixels = imageops.blur_each(image.pixels, blurs) if blurs else image.pixels
                blurred = [region for region, _ in blurs]
                if logo_bgra is not None and hidden:
                    for det in hidden:
                        pixels = overlays.warp_logo(pixels, logo_bgra, det.polygon or _corners(det.box))
                    # The logo changed pixels inside the plates' regions, blurred or not.
                    blurred.extend(region for region in plate_regions if region not in blurred)
            check()
            with timed(timings, "encode"):
                encoded = imageops.encode(pixels, image.format)
                if options.keep_metadata:
                    exif = metadata.exif_payload(data, image.format)
                    kept = metadata.allowlisted(exif) if exif is not None else None
                    if kept is not None:
                        encoded = metadata.with_exif(encoded, image.format, kept)
        except VeilError:
            raise
        except Exception as exc:  # an OpenCV failure here must not leak un-blurred bytes either
            raise DetectionError(f"blurring failed: {exc}") from exc

        return AnonymizeResult(
            image=encoded,
            content_type=image.format.content_type,
            format=image.format,
            width=image.width,
            height=image.height,
            detections=faces + plates,
            regions=blurred,
            timings_ms=timings,
        )

    @staticmethod
    def _regions(boxes: list[BoxF], options: BlurOptions, image: imageops.DecodedImage) -> list[Region]:
        return imageops.regions_from_boxes(
            boxes, padding=options.padding, shrink=options.shrink, width=image.width, height=image.height
        )


def _corners(box: BoxF) -> tuple[tuple[float, float], ...]:
    x1, y1, x2, y2 = box
    return ((x1, y1), (x2, y1), (x2, y2), (x1, y2))


def _blurs(
    regions: list[Region], strength: int | None, sigma: float | None
) -> list[tuple[Region, float | None]]:
    """Each region with the sigma it is blurred at: the request's (None: from the region's size), or from
    a 1..10 strength; strength 0 means report but leave the pixels alone, so those regions are left out."""
    if strength is None:
        return [(region, sigma) for region in regions]
    with_strength = [(region, overlays.strength_sigma(strength, region)) for region in regions]
    return [(region, region_sigma) for region, region_sigma in with_strength if region_sigma is not None]
