"""The engine: the plan's model files, one session per model, and one anonymizer per inference lane.

:func:`load_engine` asks :func:`workers.plan.plan_for_this_machine` what to run, builds (or finds cached)
the model files it names (:mod:`workers.models.prepare`), opens the sessions (:mod:`workers.sessions`, or
OpenVINO's), micro-batches them on a GPU (:mod:`workers.batcher`) and gives each lane its own
:class:`~workers.pipeline.Anonymizer` over them.
"""

from __future__ import annotations

import contextlib
import logging
import queue
from collections.abc import Callable, Iterator
from pathlib import Path

from shared.errors import ModelsNotReadyError
from shared.jobs import BlurOptions
from shared.settings import WorkerSettings
from workers import sources
from workers.batcher import BatchedSession
from workers.detection import DetectionConfig
from workers.detectors.faces import FaceDetector
from workers.detectors.plates import PlateDetector
from workers.models.fetch import TextModels, ensure_retinaface, ensure_text_models
from workers.models.prepare import ensure_face_model, ensure_plate_model, ensure_yunet
from workers.openvino_session import OpenVinoSession
from workers.pipeline import Anonymizer, AnonymizeResult, Detected
from workers.plan import Plan, model_file_variant, plan_for_this_machine
from workers.sessions import TENSORRT, ProviderSession, Session, create_session

log = logging.getLogger(__name__)


class Engine:
    """One :class:`Anonymizer` per lane over shared sessions (optionally micro-batched).

    ``run`` is called from the lane threads; each call borrows a free anonymizer, so every instance is
    used by one thread at a time as :class:`Anonymizer` asks.
    """

    def __init__(
        self,
        anonymizers: list[Anonymizer],
        plan: Plan,
        closers: list[Callable[[], None]],
        models: list[str] | None = None,
    ) -> None:
        self.plan = plan
        # What the heartbeat and /readyz say is loaded (workers.sources.model_names).
        self.models = (
            models
            if models is not None
            else [f"centerface-{plan.face_model}", f"platedet-{plan.plate_model}"]
        )
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
        with self.borrowed() as anonymizer:
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
        with self.borrowed() as anonymizer:
            return anonymizer.detect(
                data, options, max_pixels=max_pixels, face_max_side=face_max_side, expired=expired
            )

    @contextlib.contextmanager
    def borrowed(self) -> Iterator[Anonymizer]:
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
    sources.check_profile(settings)
    chosen = plan_for_this_machine(settings, available)
    model_dir = Path(settings.model_dir)
    platedet = sources.uses_platedet(settings)  # the `best` profile; `permissive` has no AGPL weights
    # bf16 is computed from the float32 weights by OpenVINO at load time.
    plate_files = (
        ensure_plate_model(model_dir, model_file_variant(chosen.plate_model))  # type: ignore[arg-type]
        if platedet
        else None
    )
    face_path = ensure_face_model(model_dir, model_file_variant(chosen.face_model))  # type: ignore[arg-type]
    plate_session: ProviderSession | None = None
    masks_session: Session | None = None
    try:
        face_session: ProviderSession = open_session(
            face_path, chosen, model_dir, openvino=chosen.faces_on_openvino, precision=chosen.face_model
        )
        if plate_files is not None:
            plate_session = open_session(
                plate_files.body, chosen, model_dir, openvino=chosen.plate_model == "bf16", precision="bf16"
            )
            # Small windows per plate, never batched (see workers.detectors.plates); each window size would
            # be a new TensorRT engine, so CUDA runs them.
            masks_session = open_session(
                plate_files.masks,
                chosen,
                model_dir,
                openvino=chosen.plate_model == "bf16",
                precision="bf16",
                tensorrt=False,
            )
        # The second sources: onnxruntime, never batched, no TensorRT (their input sizes vary per photo).
        second = sources.second_sources(
            settings,
            lambda path: open_session(path, chosen, model_dir, openvino=False, tensorrt=False),
            retinaface=lambda: ensure_retinaface(model_dir),
            text_models=lambda: _text_paths(ensure_text_models(model_dir)),
            yunet=lambda: ensure_yunet(model_dir),
        )
    except ModelsNotReadyError:
        raise
    except Exception as exc:  # onnxruntime and openvino raise their own, untyped exceptions
        raise ModelsNotReadyError(f"could not load the models: {exc}") from exc
    # The plate session's providers first (onnxruntime unless plate_model is bf16), then the faces' own.
    first = [plate_session] if plate_session is not None else []
    used = list(dict.fromkeys(name for s in [*first, face_session] for name in s.get_providers()))
    closers: list[Callable[[], None]] = []
    if chosen.max_batch > 1:
        face_session = BatchedSession(
            face_session, max_batch=chosen.max_batch, max_wait_ms=chosen.max_wait_ms, name="batch-faces"
        )
        closers = [face_session.close]
        if plate_session is not None:
            plate_session = BatchedSession(
                plate_session, max_batch=chosen.max_batch, max_wait_ms=chosen.max_wait_ms, name="batch-plates"
            )
            closers.append(plate_session.close)
    anonymizers = [
        _anonymizer(
            FaceDetector(face_session, chosen.face_input_multiple),
            # Batched calls are padded to one input size, which the plate anchors depend on: square inputs.
            PlateDetector(plate_session, masks_session, square=chosen.max_batch > 1)
            if plate_session is not None and masks_session is not None
            else None,
            used,
            settings,
            second,
        )
        for _ in range(chosen.lanes)
    ]
    models = sources.model_names(settings, face_model=chosen.face_model, plate_model=chosen.plate_model)
    log.info("inference plan: %s on %s; models %s", chosen.describe(), used, models)
    return Engine(anonymizers, chosen, closers, models)


def _text_paths(models: TextModels) -> tuple[Path, Path]:
    return models.det, models.rec


def open_session(
    path: Path,
    chosen: Plan,
    model_dir: Path,
    *,
    openvino: bool,
    precision: str = "bf16",
    tensorrt: bool = True,
) -> ProviderSession:
    """A session for one model file as ``chosen`` asks: OpenVINO, or onnxruntime on the plan's providers
    (without TensorRT where inputs change size on every call, as the plate mask windows do)."""
    if openvino:
        return OpenVinoSession(
            path, streams=chosen.lanes, threads_per_stream=chosen.intra_op_threads, precision=precision
        )
    session: ProviderSession = create_session(
        path,
        [name for name in chosen.providers if tensorrt or name != TENSORRT],
        intra_op_threads=chosen.intra_op_threads,
        model_dir=model_dir,
        allow_spinning=chosen.allow_spinning,
    )
    return session


def _anonymizer(
    faces: FaceDetector,
    plates: PlateDetector | None,
    providers: list[str],
    settings: WorkerSettings,
    second: sources.SecondSources,
) -> Anonymizer:
    return Anonymizer(
        faces,
        plates,
        providers=providers,
        config=DetectionConfig.from_settings(settings),
        retinaface=second.retinaface,
        plate_text=second.plate_text,
        yunet=second.yunet,
    )
