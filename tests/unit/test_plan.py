"""The machine's plan: providers chosen from the preference and the build, lanes, threads, batching and
model precisions from the settings and the CPU (no GPU needed)."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest

from shared.errors import ModelsNotReadyError
from shared.settings import WorkerSettings, load_settings
from workers import openvino_session
from workers import plan as plan_module
from workers.plan import COMPILED_FACE_INPUT_MULTIPLE, cpu_has_fast_int8, plan, select_providers
from workers.sessions import CPU, CUDA, TENSORRT

GPU_BUILD = [TENSORRT, CUDA, CPU]
CPU_BUILD = ["AzureExecutionProvider", CPU]


def test_cuda_preferred_when_available() -> None:
    chosen = select_providers([CUDA, CPU], GPU_BUILD, enable_tensorrt=False, require_gpu=False)
    assert chosen == [CUDA, CPU]


def test_tensorrt_only_when_enabled_and_first() -> None:
    assert select_providers([CUDA, CPU], GPU_BUILD, enable_tensorrt=True, require_gpu=False) == [
        TENSORRT,
        CUDA,
        CPU,
    ]
    # Listed in the preference but not enabled: left out (engine builds are slow and opt-in).
    assert select_providers([TENSORRT, CUDA], GPU_BUILD, enable_tensorrt=False, require_gpu=False) == [
        CUDA,
        CPU,
    ]


def test_tensorrt_enabled_but_missing_is_skipped() -> None:
    assert select_providers([CUDA, CPU], [CUDA, CPU], enable_tensorrt=True, require_gpu=False) == [CUDA, CPU]


def test_cpu_always_last_and_once() -> None:
    assert select_providers([CPU, CUDA], GPU_BUILD, enable_tensorrt=False, require_gpu=False) == [CUDA, CPU]
    assert select_providers([], CPU_BUILD, enable_tensorrt=False, require_gpu=False) == [CPU]
    assert select_providers([CUDA], CPU_BUILD, enable_tensorrt=True, require_gpu=False) == [CPU]


def test_unavailable_preferences_are_dropped_in_order() -> None:
    available = ["ROCMExecutionProvider", CUDA, CPU]
    chosen = select_providers(
        ["OpenVINOExecutionProvider", CUDA, "ROCMExecutionProvider"],
        available,
        enable_tensorrt=False,
        require_gpu=False,
    )
    assert chosen == [CUDA, "ROCMExecutionProvider", CPU]


def test_require_gpu_without_gpu_raises() -> None:
    with pytest.raises(ModelsNotReadyError, match="GPU is required"):
        select_providers([CUDA, CPU], CPU_BUILD, enable_tensorrt=False, require_gpu=True)


def test_require_gpu_with_gpu_passes() -> None:
    chosen = select_providers([CUDA, CPU], GPU_BUILD, enable_tensorrt=False, require_gpu=True)
    assert chosen[0] == CUDA


# -- the throughput plan: providers, lanes, threads, batching, precisions (no GPU needed) --


def _worker(**values: object) -> WorkerSettings:
    return WorkerSettings(**values)


def test_plan_on_cpu_one_single_threaded_lane_per_core_int8_no_batching() -> None:
    chosen = plan(_worker(), CPU_BUILD, cores=2, fast_int8=True)
    assert chosen.providers == [CPU] and not chosen.on_gpu
    assert (chosen.lanes, chosen.intra_op_threads, chosen.max_batch) == (2, 1, 1)
    assert not chosen.allow_spinning
    assert chosen.plate_model == "int8"
    assert chosen.face_model == "fp32"


def test_plan_scales_with_cores_and_honours_overrides() -> None:
    assert plan(_worker(), CPU_BUILD, cores=16, fast_int8=True).lanes == 16
    one_lane = plan(_worker(inference_lanes=1), CPU_BUILD, cores=8, fast_int8=True)
    assert (one_lane.lanes, one_lane.intra_op_threads, one_lane.allow_spinning) == (1, 8, True)
    four = plan(_worker(inference_lanes=4), CPU_BUILD, cores=16, fast_int8=True)
    assert four.intra_op_threads == 4  # lanes x threads = cores: no oversubscription
    explicit = plan(_worker(intra_op_threads=3, max_batch=2), CPU_BUILD, cores=2, fast_int8=True)
    assert (explicit.intra_op_threads, explicit.max_batch) == (3, 2)


def test_plan_without_fast_int8_keeps_float_plates() -> None:
    assert plan(_worker(), CPU_BUILD, cores=2, fast_int8=False).plate_model == "fp32"
    assert plan(_worker(plate_model="int8"), CPU_BUILD, cores=2, fast_int8=False).plate_model == "int8"


def test_plan_faces_int8_on_openvino_only_where_the_cpu_has_amx() -> None:
    auto = plan(_worker(), CPU_BUILD, cores=2, fast_int8=True, fast_bf16=True)
    assert (auto.face_model, auto.faces_on_openvino) == ("int8", True)
    elsewhere = plan(_worker(), CPU_BUILD, cores=2, fast_int8=True, fast_bf16=False)
    assert (elsewhere.face_model, elsewhere.faces_on_openvino) == ("fp32", False)
    on_gpu = plan(_worker(), GPU_BUILD, cores=8, fast_int8=True, fast_bf16=True)
    assert (on_gpu.face_model, on_gpu.faces_on_openvino) == ("fp32", False)
    # int8 on request runs on onnxruntime where OpenVINO cannot take it.
    asked = plan(_worker(face_model="int8"), CPU_BUILD, cores=2, fast_int8=True, fast_bf16=False)
    assert (asked.face_model, asked.faces_on_openvino) == ("int8", False)
    bf16 = plan(_worker(face_model="bf16"), CPU_BUILD, cores=2, fast_int8=True, fast_bf16=True)
    assert (bf16.face_model, bf16.faces_on_openvino) == ("bf16", True)
    assert auto.describe()["face_runtime"] == "openvino"
    with pytest.raises(ModelsNotReadyError, match="face_model bf16"):
        plan(_worker(face_model="bf16"), CPU_BUILD, cores=2, fast_int8=True, fast_bf16=False)
    # Plates stay int8 where it is fast (bf16 plates measured no faster in the pipeline); bf16 on request.
    assert plan(_worker(), CPU_BUILD, cores=2, fast_int8=True, fast_bf16=True).plate_model == "int8"
    bf16_plates = plan(_worker(plate_model="bf16"), CPU_BUILD, cores=2, fast_int8=True, fast_bf16=True)
    assert bf16_plates.plate_model == "bf16"
    with pytest.raises(ModelsNotReadyError, match="plate_model bf16"):
        plan(_worker(plate_model="bf16"), CPU_BUILD, cores=2, fast_int8=True, fast_bf16=False)


def test_plan_on_gpu_batches_and_keeps_float16() -> None:
    chosen = plan(_worker(), GPU_BUILD, cores=8, fast_int8=True)
    assert chosen.providers == [CUDA, CPU] and chosen.on_gpu
    assert chosen.plate_model == "fp16"
    assert chosen.max_batch == 8 and chosen.lanes == 8  # one lane per batch slot
    trt = plan(_worker(enable_tensorrt=True), GPU_BUILD, cores=8, fast_int8=True)
    assert trt.providers[0] == TENSORRT and trt.on_gpu


def test_face_inputs_are_coarse_where_the_runtime_compiles_per_size() -> None:
    """OpenVINO and TensorRT keep what they compile for every input size: few sizes bound that memory."""
    openvino = plan(_worker(), CPU_BUILD, cores=2, fast_int8=True, fast_bf16=True)
    assert openvino.face_input_multiple == COMPILED_FACE_INPUT_MULTIPLE == 128
    assert openvino.describe()["face_input_multiple"] == 128
    trt = plan(_worker(enable_tensorrt=True), GPU_BUILD, cores=8, fast_int8=True)
    assert trt.face_input_multiple == 128
    assert plan(_worker(), GPU_BUILD, cores=8, fast_int8=True).face_input_multiple == 32  # CUDA
    assert plan(_worker(), CPU_BUILD, cores=2, fast_int8=True).face_input_multiple == 32  # onnxruntime


def test_require_gpu_fails_the_plan_on_a_cpu_build() -> None:
    with pytest.raises(ModelsNotReadyError, match="GPU is required"):
        plan(_worker(require_gpu=True), CPU_BUILD, cores=2, fast_int8=True)


def test_flat_require_gpu_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEIL_REQUIRE_GPU", "1")
    settings = load_settings()
    assert settings.worker.require_gpu
    with pytest.raises(ModelsNotReadyError):
        plan(settings.worker, CPU_BUILD, cores=2, fast_int8=True)
    monkeypatch.delenv("VEIL_REQUIRE_GPU")
    monkeypatch.setenv("VEIL_WORKER__REQUIRE_GPU", "1")
    assert load_settings().worker.require_gpu
    monkeypatch.delenv("VEIL_WORKER__REQUIRE_GPU")
    assert not load_settings().worker.require_gpu


def test_cpu_int8_detection(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("flags\t\t: fpu sse2 avx2 avx512f avx512_vnni amx_int8\n")
    assert cpu_has_fast_int8(info)
    info.write_text("flags\t\t: fpu sse2 avx2\n")
    assert not cpu_has_fast_int8(info)
    assert not cpu_has_fast_int8(tmp_path / "missing")


def test_effective_max_jobs_keeps_lanes_fed(monkeypatch: pytest.MonkeyPatch) -> None:
    from workers import main as worker_main

    monkeypatch.setattr(plan_module, "cpu_count", lambda: 2)
    monkeypatch.setattr(plan_module, "cpu_has_fast_int8", lambda: True)
    monkeypatch.setattr(openvino_session, "bf16_ready", lambda: True)
    monkeypatch.setattr(ort, "get_available_providers", lambda: CPU_BUILD)
    assert worker_main.effective_max_jobs(load_settings()) == 8  # 4 per lane, 2 lanes
    monkeypatch.setattr(ort, "get_available_providers", lambda: GPU_BUILD)
    assert worker_main.effective_max_jobs(load_settings()) == 16  # two batches of 8


def test_effective_max_jobs_sees_the_same_machine_as_the_engine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An explicit face_model=bf16 once failed here: the concurrency plan did not ask about bf16."""
    from workers import main as worker_main

    monkeypatch.setattr(plan_module, "cpu_count", lambda: 2)
    monkeypatch.setattr(openvino_session, "bf16_ready", lambda: True)
    monkeypatch.setattr(ort, "get_available_providers", lambda: CPU_BUILD)
    monkeypatch.setenv("VEIL_WORKER__FACE_MODEL", "bf16")
    assert worker_main.effective_max_jobs(load_settings()) == 8
