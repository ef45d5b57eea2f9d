"""Model sessions: what a detector calls (:class:`Session`), and onnxruntime sessions with their options.

Three kinds of object answer as a :class:`Session`: onnxruntime's ``InferenceSession``
(:func:`create_session`), :class:`workers.openvino_session.OpenVinoSession` and
:class:`workers.batcher.BatchedSession` (either of them, micro-batched). Which providers a worker uses is
the plan's decision (:mod:`workers.plan`); this module only names them and gives each its options.
TensorRT is opt-in: it compiles an engine per input shape, slow the first time.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy.typing as npt
import onnxruntime as ort

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
# Providers that run on an accelerator; anything else (CPU, Azure, DNNL, XNNPACK...) does not count.
GPU_PROVIDERS = frozenset(
    {CUDA, TENSORRT, "ROCMExecutionProvider", "MIGraphXExecutionProvider", "DmlExecutionProvider",
     "CoreMLExecutionProvider", "OpenVINOExecutionProvider"}
)  # fmt: skip

ProviderOptions = dict[str, str]
Array = npt.NDArray[Any]


class ModelInput(Protocol):
    """One input of a model, as ``get_inputs`` describes it (onnxruntime's ``NodeArg``)."""

    @property
    def name(self) -> str: ...

    @property
    def shape(self) -> Sequence[int | str | None]: ...  # a name (or None) for a dynamic axis

    @property
    def type(self) -> str: ...  # "tensor(float)", "tensor(float16)", ...


class Session(Protocol):
    """What the detectors call on a loaded model: the two methods of an onnxruntime session they use.

    ``run(output_names, input_feed)``: the named outputs (all of them for ``None``), in order.
    """

    def get_inputs(self) -> Sequence[ModelInput]: ...

    def run(self, output_names: list[str] | None, input_feed: dict[str, Array], /) -> list[Array]: ...


class ProviderSession(Session, Protocol):
    """A loaded model (onnxruntime's session or OpenVINO's): it says what runs it (onnxruntime's
    providers, or ``OpenVINO-<precision>``) and takes onnxruntime's optional ``run_options``."""

    def get_providers(self) -> list[str]: ...

    def run(
        self, output_names: list[str] | None, input_feed: dict[str, Array], run_options: Any = None, /
    ) -> list[Array]: ...


class ModelMetadata(Protocol):
    @property
    def custom_metadata_map(self) -> Mapping[str, str]: ...


class MetadataSession(Session, Protocol):
    """A session that also reads the model's metadata (onnxruntime's; PP-OCR keeps its characters there)."""

    def get_modelmeta(self) -> ModelMetadata: ...


def provider_options(name: str, *, model_dir: Path, device_id: int = 0) -> ProviderOptions:
    """Options for one provider; empty for providers that need none."""
    if name == CUDA:
        return {
            "device_id": str(device_id),
            # EXHAUSTIVE benchmarks every conv for each new input shape; face inputs vary per image.
            "cudnn_conv_algo_search": "DEFAULT",
            # Grow the arena by what is asked, not by powers of two: several sessions share one card.
            "arena_extend_strategy": "kSameAsRequested",
            "do_copy_in_default_stream": "1",
        }
    if name == TENSORRT:
        cache = model_dir / "trt-engines"
        cache.mkdir(parents=True, exist_ok=True)
        return {
            "device_id": str(device_id),
            "trt_fp16_enable": "True",
            # Building an engine takes minutes; keep them across restarts.
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": "True",
            "trt_timing_cache_path": str(cache),
        }
    return {}


def create_session(
    path: Path,
    providers: list[str],
    *,
    intra_op_threads: int,
    model_dir: Path,
    allow_spinning: bool = True,
) -> ort.InferenceSession:
    """Load one model with full graph optimisation; ``intra_op_threads=0`` lets onnxruntime decide.

    ``allow_spinning=False`` makes idle intra-op threads sleep instead of busy-waiting, so sessions that
    run side by side (or the codec work next to them) do not lose cores to spinning.
    """
    options = ort.SessionOptions()
    if not allow_spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1  # sequential execution: no parallel branches to feed
    options.log_severity_level = 3  # errors only; ORT's warnings about exported graphs are noise here
    session = ort.InferenceSession(
        str(path),
        sess_options=options,
        providers=[(name, provider_options(name, model_dir=model_dir)) for name in providers],
    )
    used: list[str] = session.get_providers()
    log.info("loaded %s with providers %s (asked for %s)", Path(path).name, used, providers)
    return session
