"""Settings for every process, read once at its entry point from ``VEIL_*`` variables.

Nested blocks use ``__``: ``VEIL_S3__BUCKET=photos``, ``VEIL_REDIS__URL=redis://host:6379/0``.
Nothing here reads the environment at import time; call :func:`load_settings` in ``main``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.jobs import BlurOptions


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


# Comma-separated in the environment (`a,b,c`), a list in code.
CsvList = Annotated[list[str], NoDecode, BeforeValidator(_split_csv)]


class RedisSettings(BaseModel):
    # One server (redis://, rediss://, unix://) or a master behind Sentinel:
    # redis+sentinel://[:password@]host:26379,host2:26379/mymaster/0 (shared/redisurl.py). Read when a
    # process builds its clients at start-up: a bad URL stops it there, saying why (never the password).
    url: str = "redis://127.0.0.1:6379/0"
    # Prefix for every key Veil writes, so one Redis can host several deployments.
    prefix: str = "veil"
    queue_name: str = "veil:queue"
    # New jobs get 503 QUEUE_FULL while the queue holds this many (0: no limit), so a flood waits at the
    # client instead of filling Redis and the store; bulk jobs stop expanding at half of it, leaving the
    # other half to uploads (gateway/admission.py, workers/bulk.py).
    max_queued_jobs: int = Field(default=10_000, ge=0)


class S3Settings(BaseModel):
    endpoint_url: str | None = "http://127.0.0.1:8333"
    # Endpoint put into presigned URLs: what clients can reach (may differ from the internal one).
    public_endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = "veil"
    secret_access_key: str | None = "veil-secret"
    bucket: str = "veil"
    uploads_prefix: str = "uploads/"
    results_prefix: str = "results/"
    result_ttl_seconds: int = Field(default=24 * 3600, ge=60, le=7 * 24 * 3600)
    # Only buckets listed here may be named by `{"s3": {"bucket", "key"}}` inputs (besides `bucket`).
    readable_buckets: CsvList = Field(default_factory=list)
    # Buckets bulk jobs may write blurred copies into (``"output": {"bucket", "prefix"}``).
    writable_buckets: CsvList = Field(default_factory=list)
    # Deprecated, ignored (a warning if set): every store call goes through boto3 now (docs/decisions.md,
    # "S3"). Still accepted for this release so that existing deployments start; removed in the next.
    presigned_transfers: bool | None = None
    # The longest one store call may take, its retries included, in the gateway and the workers alike: a
    # store that stops answering fails the call (503 STORE_UNAVAILABLE at the gateway) within this instead
    # of holding it for the outage. It also bounds moving a whole image: raise it for a store behind a
    # slow link. Keep it well under the worker's job timeout.
    request_timeout_seconds: float = Field(default=5.0, gt=0, le=300)

    @field_validator(
        "endpoint_url", "public_endpoint_url", "access_key_id", "secret_access_key", mode="before"
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        # An environment variable can't be unset to None: empty means "none" (AWS's own endpoint, and
        # boto3's credential chain: an IAM role, a pod identity), where the defaults are the embedded store.
        return None if isinstance(value, str) and not value.strip() else value


class WebhookSettings(BaseModel):
    """Webhook deliveries (workers/notify.py): each failed attempt is retried after a jittered exponential
    backoff (a random 50-100 % of ``first`` x 2^(attempt-1), capped at ``max``) until ``retry_for_seconds``
    after the delivery was queued; then it is given up. At the defaults: about 40 attempts over a day."""

    # At most the job record's 48 h: a delivery's body is built from the record at each attempt.
    retry_for_seconds: int = Field(default=24 * 3600, ge=0, le=2 * 24 * 3600)
    retry_first_delay_seconds: float = Field(default=2.0, ge=0.01, le=3600)
    retry_max_delay_seconds: float = Field(default=3600.0, ge=0.01, le=24 * 3600)


class LimitSettings(BaseModel):
    max_upload_bytes: int = 25 * 1024 * 1024
    # Videos (POST /v1/jobs only): read whole into the gateway's memory to be probed, as photos are.
    max_video_bytes: int = Field(default=200 * 1024 * 1024, ge=1)
    max_pixels: int = 50_000_000
    max_side: int = 16_384
    url_fetch_timeout_seconds: float = 15.0
    url_max_redirects: int = 5


class GatewaySettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8080
    # Operator escape hatch for the SSRF guard: CIDRs or host names that may be fetched although private.
    url_allowlist: CsvList = Field(default_factory=list)
    # Where the gateway itself is reachable, for absolute links (None: relative links).
    public_base_url: str | None = None
    # How long a vendor-compatible facade waits for its job before answering with the job id.
    facade_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    # Second listener for Plate Recognizer's on-premise style `POST /` and `GET /info/` (None: off).
    platerecognizer_port: int | None = Field(default=None, ge=1, le=65535)
    # Admission (gateway/admission.py): 429 RATE_LIMITED when one API key submits faster than this many
    # jobs per second, beyond a burst (0: no limit). The queue's own limit is RedisSettings.max_queued_jobs.
    submissions_per_second: float = Field(default=0.0, ge=0)
    submission_burst: int = Field(default=20, ge=1)
    # On SIGTERM (gateway/drain.py): /readyz answers 503 at once, requests are still served for
    # shutdown_delay (the load balancer's time to stop sending; 0 without one, as in `veil up`), then the
    # listener closes and open requests get drain_seconds to finish before they are cut.
    shutdown_delay_seconds: float = Field(default=0.0, ge=0, le=300)
    drain_seconds: float = Field(default=25.0, ge=0, le=3600)


# What VEIL_WORKER__DETECTION=fast changes: the measured recall and throughput of each are in
# docs/accuracy.md ("One switch for speed").
FAST_DETECTION: dict[str, object] = {
    "face_retinaface": False,
    "face_yunet": False,
    "plate_text": "fallback",
}


class WorkerSettings(BaseModel):
    model_dir: Path = Path(".cache/models")
    # Execution-provider preference; intersected with what onnxruntime offers.
    providers: CsvList = Field(default_factory=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    enable_tensorrt: bool = False
    require_gpu: bool = False
    max_jobs: int = Field(default=4, ge=1)
    # arq's timeout for one job; a crashed worker's job is picked up again after timeout + 10 s.
    job_timeout_seconds: int = Field(default=45, ge=5)
    # On SIGTERM the worker takes no new job and gives its running ones this long to finish, then hands
    # the rest back to the queue (0: at once). Below Kubernetes' default 30 s grace period.
    drain_seconds: int = Field(default=25, ge=0, le=3600)
    # Detection only: counted from when an inference lane starts the image, not while it waits for one.
    detect_timeout_seconds: float = Field(default=30.0, gt=0)
    # How often the sweeper (workers/sweeper.py) fails jobs no worker will finish and retries deletions
    # the store refused; at the seconds of each minute that are multiples of it (so 60: once a minute).
    sweep_interval_seconds: int = Field(default=60, ge=1, le=60)
    max_tries: int = Field(default=3, ge=1)
    # Prometheus metrics (workers/metrics.py) on host:metrics_port; None: off (`veil up`, tests), 0: a free
    # port, published in the worker's heartbeat. The deploy/ images set 0.0.0.0 and 9108.
    host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    intra_op_threads: int = Field(default=0, ge=0)  # 0: onnxruntime picks (physical cores)
    face_max_side: int = Field(default=1280, ge=64)
    # Detection quality (workers/detection.DetectionConfig; recall and cost measured in docs/accuracy.md).
    face_min_score: float = Field(default=0.3, ge=0, le=1)
    plate_min_score: float = Field(default=0.3, ge=0, le=1)
    face_upscale: float = Field(default=2.0, ge=1, le=4)  # small photos zoomed, long side <= face_max_side
    face_tiles: bool = True  # photos over face_max_side: also native-resolution tiles
    face_head_margin: float = Field(default=0.1, ge=0, le=1)  # grow face boxes towards the whole head
    plate_tiles: bool = True  # photos over plate_tile_side: also overlapping tiles of that side
    # 1280: the model sees every plate at no less than half its size (tiles run at a long side of 640).
    plate_tile_side: int = Field(default=1280, ge=320)
    tile_overlap: float = Field(default=0.2, ge=0, le=0.5)
    # Which weights the worker loads (docs/accuracy.md, README "Models"). best: CenterFace + RetinaFace
    # + YuNet for faces, platedet (AGPL-3.0 weights) + PP-OCR text for plates. permissive: no platedet,
    # only permissively licensed weights (CenterFace, RetinaFace, YuNet, PP-OCR); plates from their text.
    models: Literal["best", "permissive"] = "best"
    # Second face source: RetinaFace (MobileNet-0.25), its faces added to CenterFace's. 0.75 beside YuNet
    # (0.7 alone): same recall, fewer false positives (docs/accuracy.md).
    face_retinaface: bool = True
    face_retinaface_min_score: float = Field(default=0.75, ge=0, le=1)
    face_retinaface_upscale: float = Field(default=2.0, ge=1, le=4)  # long side <= face_max_side
    # Third face source: YuNet (MIT), its faces added too: small crowd faces the others miss.
    face_yunet: bool = True
    face_yunet_min_score: float = Field(default=0.7, ge=0, le=1)
    face_yunet_upscale: float = Field(default=3.0, ge=1, le=4)  # long side <= face_max_side
    # Plates from their text (PP-OCR detection + reading). on: every photo; fallback: only photos where
    # platedet found no plate (faster; see README "Throughput"); off: never (`best` only: platedet alone).
    plate_text: Literal["on", "fallback", "off"] = "on"
    plate_text_min_score: float = Field(default=0.6, ge=0, le=1)  # the text detector's score of a line
    plate_text_read_min_score: float = Field(default=0.5, ge=0, le=1)  # the recogniser's score of its text
    # Long side the text detector runs at. Default: 640 beside platedet; 1280 in `permissive`, where text
    # is the only plate source and small plates need the photo's own resolution.
    plate_text_max_side: int | None = Field(default=None, ge=320, le=4096)
    # Read each candidate and keep only plate-like text (off: shape alone decides; more false positives).
    plate_text_read: bool = True
    # Throughput (workers/plan.py). Images processed at once, each through the whole pipeline;
    # 0: one per core on CPU (each with 1 onnxruntime thread), 4 on a GPU (codecs overlap inference).
    inference_lanes: int = Field(default=0, ge=0)
    # Cross-job micro-batching of model passes; 0: 1 (off) on CPU, 8 on a GPU.
    max_batch: int = Field(default=0, ge=0, le=64)
    max_wait_ms: float = Field(default=4.0, ge=0, le=1000)
    # One switch for throughput over recall (README "Throughput"): `fast` drops the second and third face
    # sources and reads plate text only where platedet found nothing (FAST_DETECTION). A setting given
    # explicitly still wins over it.
    detection: Literal["thorough", "fast"] = "thorough"
    # Plate model precision: auto = int8 on a CPU with VNNI/AMX, fp32 on other CPUs, fp16 on a GPU;
    # bf16 (OpenVINO, AMX / AVX-512 BF16 CPUs) on request: no faster than int8 in the pipeline here.
    plate_model: Literal["auto", "fp16", "fp32", "int8", "bf16"] = "auto"
    # CenterFace precision. auto: int8 run by the openvino runtime on a CPU with AMX / AVX-512 BF16 (its
    # int8 kernels: about 25 % less CPU than bf16, same anon_recall on the faces set), else fp32. bf16
    # (OpenVINO, same CPUs) on request; int8 elsewhere runs on onnxruntime.
    face_model: Literal["auto", "fp32", "int8", "bf16"] = "auto"

    @model_validator(mode="after")
    def _detection_preset(self) -> WorkerSettings:
        if self.detection == "fast":
            for name, value in FAST_DETECTION.items():
                if name not in self.model_fields_set:
                    setattr(self, name, value)
        return self


class VideoSettings(BaseModel):
    """Video jobs (docs/video.md): the limits the gateway and the worker refuse videos over, and how the
    worker's pipeline (workers/video/) detects, tracks and encodes."""

    # Off by default: a video job runs as an arq function whose timeout is ``job_timeout_seconds``, and arq
    # keeps every job of a killed worker from running again until the longest function timeout (+10 s)
    # has passed; with videos on, that is this timeout instead of the photo one (docs/video.md). Off, the
    # gateway answers a video with 415.
    enabled: bool = False
    # How long one video job may run (arq's timeout for video jobs, and the sweeper's deadline).
    job_timeout_seconds: int = Field(default=600, ge=10, le=24 * 3600)
    # Limits (413 PAYLOAD_TOO_LARGE at the gateway; the worker checks them again while decoding).
    max_duration_seconds: float = Field(default=600.0, gt=0)
    max_pixels_per_frame: int = Field(default=3840 * 2160, ge=1)  # 4K UHD
    max_frames: int = Field(default=36_000, ge=1)  # 10 minutes at 60 fps
    # Detect on every Nth frame only, and interpolate the tracks between (faster, looser boxes).
    detect_every_n: int = Field(default=1, ge=1, le=30)
    # Frames decoded and detected per step (between deadline checks and progress reports).
    batch_frames: int = Field(default=8, ge=1, le=256)
    # Copy the audio stream untouched (off: the output has no audio).
    keep_audio: bool = True
    # Tracking (workers/video/tracks.py). A detection joins a track when its box overlaps the track's
    # predicted box by at least track_iou; a track survives track_max_gap detection passes without a
    # sighting (those frames are bridged by interpolation); each track is blurred track_extend frames
    # before its first and after its last sighting; boxes grow by track_growth x the motion per frame.
    track_iou: float = Field(default=0.1, gt=0, le=1)
    track_max_gap: int = Field(default=5, ge=0, le=100)
    track_extend: int = Field(default=2, ge=0, le=100)
    track_growth: float = Field(default=1.0, ge=0, le=10)
    # H.264 (libx264) rate factor and speed preset: lower crf is better quality and larger files.
    crf: int = Field(default=20, ge=0, le=51)
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = "veryfast"


def _parse_s3_url(value: object) -> object:
    """``s3://bucket/prefix/`` as ``{"bucket", "prefix"}``; anything else is left for pydantic to refuse."""
    if isinstance(value, str):
        if not value.strip():
            return None
        if not value.startswith("s3://"):
            raise ValueError(f"expected s3://bucket/prefix/, got {value!r}")
        bucket, _, prefix = value.removeprefix("s3://").partition("/")
        return {"bucket": bucket, "prefix": prefix}
    return value


class S3Location(BaseModel):
    bucket: str = Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
    prefix: str = ""

    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


# ``s3://bucket/prefix/`` in the environment, a location in code.
S3Url = Annotated[S3Location | None, NoDecode, BeforeValidator(_parse_s3_url)]
# Options only the vendor facades set: never a watched prefix's (a logo key would be deleted as an upload).
_FACADE_ONLY_OPTIONS = frozenset({"face_strength", "plate_strength", "logo_key"})


class WatchSettings(BaseModel):
    """A watched prefix (docs/watch.md): every new object under ``source`` is blurred once into ``output``
    by the workers, then the source is kept, tagged or deleted (``after``). Off while ``source`` is unset.
    Which buckets it may touch is checked against the S3 settings at the worker's start-up
    (:func:`shared.watch.check_watch`)."""

    source: S3Url = None  # VEIL_WATCH__SOURCE=s3://bucket/incoming/
    output: S3Url = None  # VEIL_WATCH__OUTPUT=s3://out-bucket/blurred/ (a writable bucket)
    # keep: remembered in Redis only; tag: tagged veil-status=done (or failed), which also marks it done;
    # delete: deleted once its blurred copy is written (a source that failed is tagged, never deleted).
    after: Literal["keep", "tag", "delete"] = "keep"
    # One listing poll at the seconds of each minute that are multiples of it (as the sweeper's interval).
    poll_seconds: int = Field(default=10, ge=1, le=60)
    targets: CsvList = Field(default_factory=lambda: ["faces", "plates"])
    # Other blur options as JSON, as in POST /v1/jobs: VEIL_WATCH__OPTIONS='{"blur": 20, "padding": 0.2}'.
    options: dict[str, object] = Field(default_factory=dict)
    # The API key id the jobs belong to (their records, usage); the default is no key's.
    owner: str = Field(default="watch", min_length=1, max_length=64)
    # Bounds per poll: objects listed (the listing resumes after the last one next time) and jobs queued.
    list_per_poll: int = Field(default=5000, ge=1, le=100_000)
    queue_per_poll: int = Field(default=500, ge=1, le=10_000)

    @model_validator(mode="after")
    def _complete(self) -> WatchSettings:
        if self.source is not None and self.output is None:
            raise ValueError("VEIL_WATCH__OUTPUT is required with VEIL_WATCH__SOURCE (s3://bucket/prefix/)")
        if self.source is None and self.output is not None:
            raise ValueError("VEIL_WATCH__OUTPUT is set but VEIL_WATCH__SOURCE is not")
        self.blur_options()  # refused now, at start-up, not at the first object
        return self

    @property
    def enabled(self) -> bool:
        return self.source is not None

    def blur_options(self) -> BlurOptions:
        """The options every watched object is blurred with."""
        if "targets" in self.options:
            raise ValueError("VEIL_WATCH__OPTIONS: set targets with VEIL_WATCH__TARGETS")
        facade_only = sorted(_FACADE_ONLY_OPTIONS.intersection(self.options))
        if facade_only:
            raise ValueError(f"VEIL_WATCH__OPTIONS: {', '.join(facade_only)} cannot be set here")
        try:
            return BlurOptions.model_validate({**self.options, "targets": ",".join(self.targets)})
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in error["loc"]) or "options"
            raise ValueError(f"VEIL_WATCH__OPTIONS / TARGETS: {where}: {error['msg']}") from None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VEIL_",
        env_nested_delimiter="__",
        env_file=None,
        extra="ignore",
    )

    redis: RedisSettings = Field(default_factory=RedisSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    watch: WatchSettings = Field(default_factory=WatchSettings)
    video: VideoSettings = Field(default_factory=VideoSettings)
    # Flat aliases for the settings operators touch most.
    url_allowlist: CsvList = Field(default_factory=list)
    log_level: str = "INFO"
    # VEIL_REQUIRE_GPU=1: same as VEIL_WORKER__REQUIRE_GPU=1 (either one turns it on).
    require_gpu: bool = False

    @model_validator(mode="after")
    def _flat_require_gpu(self) -> Settings:
        if self.require_gpu and not self.worker.require_gpu:
            self.worker = self.worker.model_copy(update={"require_gpu": True})
        return self

    def effective_url_allowlist(self) -> list[str]:
        return [*self.url_allowlist, *self.gateway.url_allowlist]


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment (``VEIL_*``), with explicit overrides winning."""
    return Settings(**overrides)  # type: ignore[arg-type]
