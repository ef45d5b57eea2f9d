"""Models on OpenVINO for CPUs with AMX or AVX-512 BF16: CenterFace in int8 by default, bf16 on request.

On those CPUs OpenVINO runs an ONNX model on the matrix units: a float32 model in bfloat16, or an int8
QDQ model (as :mod:`workers.models.quantize` writes it) on its int8 kernels. CenterFace at 1280x736 takes
about 90 ms per pass on one core in int8 and 100-125 ms in bf16, against about 300 ms with onnxruntime's
float32 kernels and 120-140 ms with its int8 ones. The percentile-calibrated int8 model keeps the float
model's anon_recall on the faces set (docs/accuracy.md). onnxruntime's own OpenVINO provider would
replace the ``onnxruntime`` package with an older build, so the ``openvino`` runtime is used directly,
behind the two methods of an onnxruntime session the detectors call (``get_inputs``, ``run``).

One compiled model serves every lane: ``streams`` executors with ``threads_per_stream`` threads each, and
one infer request per calling thread (requests are not thread-safe; the lanes run concurrently).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

PROVIDER = "OpenVINO"  # how the plan and the logs name this backend, with the precision: OpenVINO-bf16


def bf16_ready() -> bool:
    """Whether the ``openvino`` runtime is installed and its CPU plugin can compute in bfloat16."""
    try:
        import openvino
    except ImportError:
        return False
    try:
        capabilities = openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # a broken install or no CPU plugin: use onnxruntime
        log.warning("openvino is installed but its CPU plugin did not answer", exc_info=True)
        return False
    return "BF16" in capabilities


@dataclass(frozen=True)
class _Input:
    name: str
    shape: list[int | str]
    type: str = "tensor(float)"


class OpenVinoSession:
    """An ONNX model compiled by OpenVINO for the CPU, with dynamic input sizes: a float32 model computed
    in bfloat16, or an int8 QDQ model (its quantized layers on the int8 kernels, the rest in bfloat16).
    ``precision`` only names it in ``get_providers``."""

    def __init__(
        self, path: Path, *, streams: int, threads_per_stream: int = 1, precision: str = "bf16"
    ) -> None:
        import openvino

        core = openvino.Core()
        model = core.read_model(str(path))
        self._input_name = model.inputs[0].get_any_name()
        # Any batch and size, as with onnxruntime (CenterFace's prepared model is dynamic already).
        channels = model.inputs[0].get_partial_shape()[1]
        model.reshape({self._input_name: openvino.PartialShape([-1, channels, -1, -1])})
        self._channels = channels.get_length()
        self._compiled = core.compile_model(
            model,
            "CPU",
            {
                "INFERENCE_PRECISION_HINT": "bf16",
                "NUM_STREAMS": max(1, streams),
                "INFERENCE_NUM_THREADS": max(1, streams) * max(1, threads_per_stream),
                # The lanes' other work (plates on onnxruntime, codecs) shares these cores: no pinning.
                "ENABLE_CPU_PINNING": False,
            },
        )
        self._output_names = [output.get_any_name() for output in self._compiled.outputs]
        self._local = threading.local()
        self._provider = f"{PROVIDER}-{precision}"
        log.info("compiled %s with OpenVINO (%s, %d streams)", Path(path).name, precision, streams)

    def get_inputs(self) -> list[_Input]:
        return [_Input(self._input_name, ["batch", self._channels, "height", "width"])]

    def get_providers(self) -> list[str]:
        return [self._provider]

    def run(
        self, output_names: list[str] | None, input_feed: dict[str, npt.NDArray[Any]], run_options: Any = None
    ) -> list[npt.NDArray[np.float32]]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        # Zero-copy in (the caller's blob outlives this synchronous call) and out (copied once, below).
        results = request.infer(input_feed, share_inputs=True, share_outputs=True)
        # A port may carry several tensor names (an Identity folded away leaves both): index them all.
        by_name = {name: value for port, value in results.items() for name in port.get_names()}
        # The request reuses its output buffers on the next call: hand out copies.
        return [np.array(by_name[name], copy=True) for name in (output_names or self._output_names)]
