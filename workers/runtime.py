"""onnxruntime sessions: which execution providers to use, with what options.

The operator states a preference (``VEIL_WORKER__PROVIDERS``); it is intersected with what the installed
onnxruntime build offers. CPU is always appended last so a model still runs when a GPU provider cannot
take it (or a node of it). TensorRT is opt-in: it compiles an engine per input shape, slow the first time.
"""

from __future__ import annotations

import logging
from pathlib import Path

import onnxruntime as ort

from shared.errors import ModelsNotReadyError

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


def select_providers(
    preference: list[str], available: list[str], *, enable_tensorrt: bool, require_gpu: bool
) -> list[str]:
    """Preference ∩ available in preference order; TensorRT first only when enabled; CPU always last."""
    chosen: list[str] = []
    if enable_tensorrt and TENSORRT in available:
        chosen.append(TENSORRT)
    for name in preference:
        if name in available and name not in chosen and name not in (TENSORRT, CPU):
            chosen.append(name)
    chosen.append(CPU)  # present in every onnxruntime build
    if require_gpu and not any(name in GPU_PROVIDERS for name in chosen):
        wanted = [name for name in preference if name != CPU] or [CUDA]
        if enable_tensorrt:
            wanted = [TENSORRT, *wanted]
        raise ModelsNotReadyError(
            f"a GPU is required (require_gpu) but none of {wanted} is available; onnxruntime offers "
            f"{available}. Install onnxruntime-gpu with matching CUDA/cuDNN, "
            "or unset VEIL_WORKER__REQUIRE_GPU."
        )
    return chosen


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
    path: Path, providers: list[str], *, intra_op_threads: int, model_dir: Path
) -> ort.InferenceSession:
    """Load one model with full graph optimisation; ``intra_op_threads=0`` lets onnxruntime decide."""
    options = ort.SessionOptions()
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
