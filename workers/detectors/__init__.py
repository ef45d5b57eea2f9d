"""The two detectors: CenterFace for faces, a YOLOv8-seg model for licence plates."""

from workers.detectors.base import RawDetection
from workers.detectors.faces import FaceDetector
from workers.detectors.plates import PlateDetector

__all__ = ["FaceDetector", "PlateDetector", "RawDetection"]
