"""The machine's plan: which providers, how many images at once, with how many threads, which model files.

The operator states a preference (``VEIL_WORKER__PROVIDERS``); it is intersected with what the installed
onnxruntime build offers. CPU is always appended last so a model still runs when a GPU provider cannot
take it (or a node of it). The worker, its concurrency and the model builder (``python -m workers.models
--for-this-machine``) all ask :func:`plan_for_this_machine`, so they always agree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from shared.errors import ModelsNotReadyError
from shared.settings import WorkerSettings
from workers import openvino_session
from workers.sessions import CPU, CUDA, GPU_PROVIDERS, TENSORRT


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


# -- throughput: how many images at once, with how many threads, which model files ----------------------

# Runtimes that compile for each input size (OpenVINO's CPU plugin, TensorRT) keep what they compiled, so
# every new photo size costs memory for good: CenterFace on OpenVINO held ~2.1 GB after 800 random sizes,
# still rising. Sides padded to multiples of 128 leave at most 100 sizes (long side <= 1280), and it levels
# off near 0.8 GB, for ~5 % more face CPU once warm (less while sizes are new; docs/benchmarks.md).
# Elsewhere: CenterFace's own 32.
COMPILED_FACE_INPUT_MULTIPLE = 128

_INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp")  # x86 VNNI/AMX, ARM dot-product


def cpu_count() -> int:
    """Cores this process may run on (affinity-aware; cgroup quotas are the operator's to set via lanes)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def cpu_has_fast_int8(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """VNNI/AMX (x86) or dot-product (ARM) instructions: int8 convolutions then run 2-3x faster."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return False
    flags = set(text.split())
    return any(flag in flags for flag in _INT8_FLAGS)


@dataclass(frozen=True)
class Plan:
    """Everything the worker decides about execution, from settings and the machine; logged at start-up."""

    providers: list[str]
    on_gpu: bool
    lanes: int  # images in flight through Anonymizer.run at once (one thread each)
    intra_op_threads: int  # per session
    allow_spinning: bool
    max_batch: int
    max_wait_ms: float
    plate_model: str
    face_model: str
    # int8 CenterFace runs on OpenVINO where it is installed and the CPU has AMX / AVX-512 BF16 (it
    # uses the AMX/VNNI int8 kernels there: about 25 % faster than bf16), else on onnxruntime.
    faces_on_openvino: bool = False

    @property
    def face_input_multiple(self) -> int:
        """What the face input's sides are padded to: coarse where the runtime compiles per input size."""
        compiles_per_shape = self.faces_on_openvino or self.providers[0] == TENSORRT
        return COMPILED_FACE_INPUT_MULTIPLE if compiles_per_shape else 32

    def describe(self) -> dict[str, str | int | float]:
        return {
            "provider": self.providers[0],
            "lanes": self.lanes,
            "intra_op_threads": self.intra_op_threads,
            "max_batch": self.max_batch,
            "max_wait_ms": self.max_wait_ms,
            "plate_model": self.plate_model,
            "face_model": self.face_model,
            "face_runtime": "openvino" if self.faces_on_openvino else "onnxruntime",
            "face_input_multiple": self.face_input_multiple,
        }


def plan(
    settings: WorkerSettings, available: list[str], *, cores: int, fast_int8: bool, fast_bf16: bool = False
) -> Plan:
    """Decide providers, lanes, threads, batching and model precisions.

    CPU: one lane per core, each session single-threaded (``intra_op_threads=1``): images run side by
    side, one per core, codecs included, with no thread pool to synchronise or oversubscribe; a batch of n
    costs n passes on a CPU, so batching is off. GPU: as many lanes as the batch size (decode/blur/encode
    on the CPU overlap inference, and enough calls arrive together to fill a batch), micro-batched.
    """
    providers = select_providers(
        list(settings.providers),
        available,
        enable_tensorrt=settings.enable_tensorrt,
        require_gpu=settings.require_gpu,
    )
    on_gpu = providers[0] in GPU_PROVIDERS and providers[0] != "OpenVINOExecutionProvider"
    max_batch = settings.max_batch or (8 if on_gpu else 1)
    # A lane makes one model call at a time, so a batch of n needs n lanes feeding it.
    lanes = settings.inference_lanes or (max(4, max_batch) if on_gpu else cores)
    intra = settings.intra_op_threads or (0 if on_gpu else max(1, cores // lanes))
    # Spinning threads burn the cores the other lanes need; only worth it for a lone session.
    allow_spinning = lanes == 1
    plate = settings.plate_model
    if plate == "auto":
        plate = "fp16" if on_gpu else ("int8" if fast_int8 else "fp32")
    face = settings.face_model
    if face == "auto":
        face = "int8" if fast_bf16 and not on_gpu else "fp32"
    for what, chosen in (("plate_model", plate), ("face_model", face)):
        if chosen == "bf16" and not fast_bf16:
            raise ModelsNotReadyError(
                f"{what} bf16 needs the openvino package and a CPU with AMX or AVX-512 BF16; "
                f"use VEIL_WORKER__{what.upper()}=auto"
            )
    return Plan(
        providers=providers,
        on_gpu=on_gpu,
        lanes=lanes,
        intra_op_threads=intra,
        allow_spinning=allow_spinning,
        max_batch=max_batch,
        max_wait_ms=settings.max_wait_ms,
        plate_model=plate,
        face_model=face,
        faces_on_openvino=face == "bf16" or (face == "int8" and fast_bf16 and not on_gpu),
    )


def plan_for_this_machine(settings: WorkerSettings, available: list[str] | None = None) -> Plan:
    """:func:`plan` with this machine's facts: providers, cores, int8 and bf16 support. The one place
    the worker, its concurrency and the model builder ask, so they always agree."""
    return plan(
        settings,
        list(available if available is not None else ort.get_available_providers()),
        cores=cpu_count(),
        fast_int8=cpu_has_fast_int8(),
        fast_bf16=openvino_session.bf16_ready(),
    )


def model_file_variant(precision: str) -> str:
    """The model file a precision runs from: OpenVINO's bf16 from the float32 one."""
    return "fp32" if precision == "bf16" else precision
