"""The gateway must start without the inference stack: no onnxruntime, cv2 or worker code imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHECK = (
    "import gateway.app, gateway.__main__, sys; "
    "loaded = sorted(m for m in sys.modules if m.split('.')[0] in {'onnxruntime', 'cv2', 'workers'}); "
    "assert not loaded, loaded"
)


def test_gateway_does_not_import_the_inference_stack() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
