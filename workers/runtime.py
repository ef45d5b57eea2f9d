"""onnxruntime sessions: which execution providers to use, with what options.

The operator states a preference (``VEIL_WORKER__PROVIDERS``); it is intersected with what the installed
onnxruntime build offers. CPU is always appended last so a model still runs when a GPU provider cannot
take it (or a node of it). TensorRT is opt-in: it compiles an engine per input shape, slow the first time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnxruntime as ort

from shared.errors import ModelsNotReadyError
from shared.jobs import BlurOptions
from shared.settings import WorkerSettings

if TYPE_CHECKING:
    from workers.pipeline import Anonymizer, AnonymizeResult, Detected

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
    from workers.openvino_session import bf16_ready

    return plan(
        settings,
        list(available if available is not None else ort.get_available_providers()),
        cores=cpu_count(),
        fast_int8=cpu_has_fast_int8(),
        fast_bf16=bf16_ready(),
    )


class Engine:
    """One :class:`Anonymizer` per lane over shared sessions (optionally micro-batched).

    ``run`` is called from the lane threads; each call borrows a free anonymizer, so every instance is
    used by one thread at a time as :class:`Anonymizer` asks.
    """

    def __init__(self, anonymizers: list[Anonymizer], plan: Plan, closers: list[Callable[[], None]]) -> None:
        self.plan = plan
        self.providers = anonymizers[0].providers
        self._all = anonymizers
        self._free: queue.SimpleQueue[Anonymizer] = queue.SimpleQueue()
        for anonymizer in anonymizers:
            self._free.put(anonymizer)
        self._closers = closers

    def warm_up(self) -> None:
        self._all[0].warm_up()

    def run(
        self,
        data: bytes,
        options: BlurOptions,
        *,
        max_pixels: int,
        face_max_side: int,
        logo: bytes | None = None,
        expired: Callable[[], bool] | None = None,
    ) -> AnonymizeResult:
        """One image on this thread's lane; ``expired`` is the job's deadline (see ``Anonymizer.run``)."""
        with self._borrowed() as anonymizer:
            return anonymizer.run(
                data,
                options,
                max_pixels=max_pixels,
                face_max_side=face_max_side,
                logo=logo,
                expired=expired,
            )

    def detect(
        self,
        data: bytes,
        options: BlurOptions,
        *,
        max_pixels: int,
        face_max_side: int,
        expired: Callable[[], bool] | None = None,
    ) -> Detected:
        with self._borrowed() as anonymizer:
            return anonymizer.detect(
                data, options, max_pixels=max_pixels, face_max_side=face_max_side, expired=expired
            )

    @contextlib.contextmanager
    def _borrowed(self) -> Iterator[Anonymizer]:
        """A free anonymizer for this thread, returned when done (blocks while every lane's is in use)."""
        anonymizer = self._free.get()
        try:
            yield anonymizer
        finally:
            self._free.put(anonymizer)

    def close(self) -> None:
        for close in self._closers:
            close()


def load_engine(settings: WorkerSettings, *, available: list[str] | None = None) -> Engine:
    """Build the models the plan asks for (cached), open one session per model and an anonymizer per lane."""
    from workers.batcher import BatchedSession
    from workers.detectors.faces import FaceDetector
    from workers.detectors.plates import PlateDetector
    from workers.models import ensure_face_model, ensure_plate_model

    chosen = plan_for_this_machine(settings, available)
    model_dir = Path(settings.model_dir)
    # bf16 is computed from the float32 weights by OpenVINO at load time.
    plate_files = ensure_plate_model(model_dir, model_file_variant(chosen.plate_model))  # type: ignore[arg-type]
    face_path = ensure_face_model(model_dir, model_file_variant(chosen.face_model))  # type: ignore[arg-type]
    try:
        face_session: Any = _session(
            face_path, chosen, model_dir, openvino=chosen.faces_on_openvino, precision=chosen.face_model
        )
        plate_session: Any = _session(
            plate_files.body, chosen, model_dir, openvino=chosen.plate_model == "bf16", precision="bf16"
        )
        # Small windows per plate, never batched (see workers.detectors.plates); each window size would
        # be a new TensorRT engine, so CUDA runs them.
        masks_session: Any = _session(
            plate_files.masks,
            chosen,
            model_dir,
            openvino=chosen.plate_model == "bf16",
            precision="bf16",
            tensorrt=False,
        )
    except Exception as exc:  # onnxruntime and openvino raise their own, untyped exceptions
        raise ModelsNotReadyError(f"could not load the models: {exc}") from exc
    # The plate session's providers first (onnxruntime unless plate_model is bf16), then the faces' own.
    used = list(dict.fromkeys([*plate_session.get_providers(), *face_session.get_providers()]))
    closers: list[Callable[[], None]] = []
    if chosen.max_batch > 1:
        face_session = BatchedSession(
            face_session, max_batch=chosen.max_batch, max_wait_ms=chosen.max_wait_ms, name="batch-faces"
        )
        plate_session = BatchedSession(
            plate_session, max_batch=chosen.max_batch, max_wait_ms=chosen.max_wait_ms, name="batch-plates"
        )
        closers = [face_session.close, plate_session.close]
    anonymizers = [
        _anonymizer(
            FaceDetector(face_session, chosen.face_input_multiple),
            # Batched calls are padded to one input size, which the plate anchors depend on: square inputs.
            PlateDetector(plate_session, masks_session, square=chosen.max_batch > 1),
            used,
            settings,
        )
        for _ in range(chosen.lanes)
    ]
    log.info("inference plan: %s on %s", chosen.describe(), used)
    return Engine(anonymizers, chosen, closers)


def model_file_variant(precision: str) -> str:
    """The model file a precision runs from: OpenVINO's bf16 from the float32 one."""
    return "fp32" if precision == "bf16" else precision


def _session(
    path: Path,
    chosen: Plan,
    model_dir: Path,
    *,
    openvino: bool,
    precision: str = "bf16",
    tensorrt: bool = True,
) -> Any:
    if openvino:
        from workers.openvino_session import OpenVinoSession

        return OpenVinoSession(
            path, streams=chosen.lanes, threads_per_stream=chosen.intra_op_threads, precision=precision
        )
    return create_session(
        path,
        [name for name in chosen.providers if tensorrt or name != TENSORRT],
        intra_op_threads=chosen.intra_op_threads,
        model_dir=model_dir,
        allow_spinning=chosen.allow_spinning,
    )


def _anonymizer(faces: Any, plates: Any, providers: list[str], settings: WorkerSettings) -> Anonymizer:
    from workers.pipeline import Anonymizer, DetectionConfig

    return Anonymizer(faces, plates, providers=providers, config=DetectionConfig.from_settings(settings))
