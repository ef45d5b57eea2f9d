"""Which detectors a worker runs for each class (the ``models`` profile and the per-source switches), their
names in the heartbeat and ``/readyz``, and the second sources built over sessions the engine opens.

``best``: CenterFace (+ RetinaFace + YuNet) for faces, platedet (+ plates from PP-OCR text) for plates.
``permissive``: the same without platedet, whose weights are AGPL-3.0: every weight loaded is under a
permissive licence (README "Models"), and plates come from their text alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import ModelsNotReadyError
from shared.settings import WorkerSettings
from workers.detectors.plate_text import TextPlateDetector, TextRecognizer
from workers.detectors.retinaface import RetinaFaceDetector
from workers.detectors.text import TextDetector
from workers.detectors.yunet import YuNetDetector

# Heartbeat names of the second sources' weights (the first sources' carry their precision).
RETINAFACE_NAME = "retinaface-mnet025"
YUNET_NAME = "yunet-2023mar"
TEXT_DET_NAME = "ppocr-v4-det"
TEXT_REC_NAME = "ppocr-v4-rec"


def check_profile(settings: WorkerSettings) -> None:
    """Refuse settings that leave a class without a detector (the permissive profile reads plates)."""
    if settings.models == "permissive" and settings.plate_text == "off":
        raise ModelsNotReadyError(
            "VEIL_WORKER__MODELS=permissive finds plates from their text only: "
            "VEIL_WORKER__PLATE_TEXT=off would leave plates undetected (use on or fallback)"
        )


def uses_platedet(settings: WorkerSettings) -> bool:
    return settings.models == "best"


def uses_retinaface(settings: WorkerSettings) -> bool:
    return settings.face_retinaface


def uses_yunet(settings: WorkerSettings) -> bool:
    return settings.face_yunet


def uses_text(settings: WorkerSettings) -> bool:
    # Without platedet, "fallback" (text where platedet found nothing) is text everywhere.
    return settings.plate_text != "off"


def text_max_side(settings: WorkerSettings) -> int:
    if settings.plate_text_max_side is not None:
        return settings.plate_text_max_side
    return 640 if uses_platedet(settings) else 1280


def model_names(settings: WorkerSettings, *, face_model: str, plate_model: str) -> list[str]:
    """What the worker announces it runs: ``centerface-<precision>``, ``retinaface-mnet025``,
    ``yunet-2023mar``, ``platedet-<precision>``, ``ppocr-v4-det`` and ``ppocr-v4-rec`` (the last only
    when reading)."""
    names = [f"centerface-{face_model}"]
    if uses_retinaface(settings):
        names.append(RETINAFACE_NAME)
    if uses_yunet(settings):
        names.append(YUNET_NAME)
    if uses_platedet(settings):
        names.append(f"platedet-{plate_model}")
    if uses_text(settings):
        names.append(TEXT_DET_NAME)
        if settings.plate_text_read:
            names.append(TEXT_REC_NAME)
    return names


@dataclass(frozen=True)
class SecondSources:
    """Detectors the anonymizers of every lane share (stateless over thread-safe sessions)."""

    retinaface: RetinaFaceDetector | None
    plate_text: TextPlateDetector | None
    yunet: YuNetDetector | None = None


OpenSession = Callable[[Path], Any]


def second_sources(
    settings: WorkerSettings,
    open_session: OpenSession,
    *,
    retinaface: Callable[[], Path],
    text_models: Callable[[], tuple[Path, Path]],
    yunet: Callable[[], Path] | None = None,
) -> SecondSources:
    """The second sources the settings ask for, each model fetched (``retinaface()``, ``yunet()``,
    ``text_models()``: detector and recogniser paths) and opened with ``open_session`` only when used."""
    face = RetinaFaceDetector(open_session(retinaface())) if uses_retinaface(settings) else None
    third = YuNetDetector(open_session(yunet())) if yunet is not None and uses_yunet(settings) else None
    text: TextPlateDetector | None = None
    if uses_text(settings):
        det_path, rec_path = text_models()
        detector = TextDetector(open_session(det_path), max_side=text_max_side(settings))
        recognizer = TextRecognizer(open_session(rec_path)) if settings.plate_text_read else None
        text = TextPlateDetector(detector, recognizer, min_text_score=settings.plate_text_read_min_score)
    return SecondSources(retinaface=face, plate_text=text, yunet=third)
