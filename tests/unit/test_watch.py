"""The watched prefix's pure parts: its settings and their start-up checks, object job ids, where copies
land, and what a poll does with each object (workers/watch_steps.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsError

from shared.jobs import JobError, JobRecord, JobStatus, Target
from shared.settings import S3Location, Settings, WatchSettings, load_settings
from shared.watch import DoneEntry, Outcome, WatchConfigError, check_watch, object_job_id, output_key
from workers.main import build_worker
from workers.watch import WATCH_FUNCTION, watch_cron_jobs
from workers.watch_steps import STALE_QUEUED, Step, next_step

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
MTIME = datetime(2026, 11, 30, 11, 0, tzinfo=UTC)
ENV = {"VEIL_WATCH__SOURCE": "s3://user-in/incoming/", "VEIL_WATCH__OUTPUT": "s3://user-out/blurred/"}


def _settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name, value in {**ENV, "VEIL_S3__WRITABLE_BUCKETS": "user-out", **env}.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    watch = _settings(
        monkeypatch,
        VEIL_WATCH__AFTER="delete",
        VEIL_WATCH__TARGETS="plates",
        VEIL_WATCH__OPTIONS='{"blur": 20, "padding": 0.3}',
        VEIL_WATCH__POLL_SECONDS="5",
        VEIL_WATCH__OWNER="0123abcd",
    ).watch
    assert watch.enabled
    assert watch.source == S3Location(bucket="user-in", prefix="incoming/")
    assert watch.output == S3Location(bucket="user-out", prefix="blurred/")
    assert (watch.after, watch.poll_seconds, watch.owner) == ("delete", 5, "0123abcd")
    options = watch.blur_options()
    assert options.targets == (Target.PLATES,)
    assert (options.blur, options.padding) == (20, 0.3)


def test_off_unless_a_source_is_set() -> None:
    watch = WatchSettings()
    assert not watch.enabled
    assert watch_cron_jobs(Settings()) == []


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"VEIL_WATCH__OUTPUT": ""}, "VEIL_WATCH__OUTPUT is required"),
        ({"VEIL_WATCH__SOURCE": "", "VEIL_WATCH__OUTPUT": "s3://user-out/x/"}, "SOURCE is not"),
        ({"VEIL_WATCH__SOURCE": "https://user-in/incoming/"}, "expected s3://bucket/prefix/"),
        ({"VEIL_WATCH__SOURCE": "s3://No_Such/incoming/"}, "String should match pattern"),
        ({"VEIL_WATCH__AFTER": "move"}, "'keep', 'tag' or 'delete'"),
        ({"VEIL_WATCH__POLL_SECONDS": "0"}, "greater than or equal to 1"),
        ({"VEIL_WATCH__TARGETS": "cats"}, "targets"),
        ({"VEIL_WATCH__OPTIONS": '{"blur": 2000}'}, "blur: Input should be less than or equal to 200"),
        ({"VEIL_WATCH__OPTIONS": '{"colour": "red"}'}, "colour: Extra inputs are not permitted"),
        ({"VEIL_WATCH__OPTIONS": '{"targets": "faces"}'}, "set targets with VEIL_WATCH__TARGETS"),
        ({"VEIL_WATCH__OPTIONS": '{"logo_key": "uploads/logo-1"}'}, "logo_key cannot be set here"),
    ],
)
def test_bad_settings_are_refused_with_what_is_wrong(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        _settings(monkeypatch, **env)


def test_options_that_are_not_json_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match='"watch"'):
        _settings(monkeypatch, VEIL_WATCH__OPTIONS="blur=20")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"VEIL_WATCH__OUTPUT": "s3://elsewhere/blurred/"}, "not writable by Veil"),
        ({"VEIL_WATCH__SOURCE": "s3://veil/incoming/"}, "Veil's own bucket"),
        ({"VEIL_WATCH__OUTPUT": "s3://veil/blurred/", "VEIL_S3__WRITABLE_BUCKETS": "veil"}, "Veil's own"),
        ({"VEIL_WATCH__SOURCE": "s3://user-in/incoming"}, "must name a folder"),
        ({"VEIL_WATCH__SOURCE": "s3://user-in/a//b/"}, "empty segment"),
        ({"VEIL_WATCH__SOURCE": "s3://user-in/a/../b/"}, "'.' or '..'"),
        ({"VEIL_WATCH__SOURCE": "s3://user-out/in/", "VEIL_WATCH__OUTPUT": "s3://user-out/in/x/"}, "overlap"),
        ({"VEIL_WATCH__SOURCE": "s3://user-out/in/x/", "VEIL_WATCH__OUTPUT": "s3://user-out/in/"}, "overlap"),
        ({"VEIL_WATCH__SOURCE": "s3://user-out/", "VEIL_WATCH__OUTPUT": "s3://user-out/out/"}, "overlap"),
    ],
)
def test_the_worker_refuses_to_start_on_what_it_must_not_touch(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    settings = _settings(monkeypatch, **env)
    with pytest.raises(WatchConfigError, match=message):
        check_watch(settings)
    with pytest.raises(WatchConfigError, match=message):
        build_worker(settings)


def test_side_by_side_folders_of_one_bucket_are_fine(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(
        monkeypatch, VEIL_WATCH__SOURCE="s3://user-out/in/", VEIL_WATCH__OUTPUT="s3://user-out/inblurred/"
    )
    assert check_watch(settings) is settings.watch


def test_the_worker_polls_at_the_multiples_of_the_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(monkeypatch, VEIL_WATCH__POLL_SECONDS="15")
    worker = build_worker(settings)
    polls = [job for job in worker.cron_jobs if job.name == WATCH_FUNCTION]
    assert len(polls) == 1
    assert polls[0].second == {0, 15, 30, 45}
    assert polls[0].unique and polls[0].run_at_startup
    assert polls[0].timeout_s == settings.worker.job_timeout_seconds  # arq's restart delay is unchanged


def test_one_job_id_per_object_version() -> None:
    first = object_job_id("in", "incoming/a.jpg", '"abc"', MTIME)
    assert first == object_job_id("in", "incoming/a.jpg", "abc", MTIME)  # quoted or not, as stores list it
    assert len(first) == 32
    others = {
        object_job_id("in", "incoming/b.jpg", '"abc"', MTIME),
        object_job_id("in", "incoming/a.jpg", '"abd"', MTIME),
        object_job_id("in", "incoming/a.jpg", '"abc"', MTIME + timedelta(seconds=1)),  # same bytes again
        object_job_id("other", "incoming/a.jpg", '"abc"', MTIME),
    }
    assert first not in others and len(others) == 4


def test_copies_keep_their_path_below_the_watched_folder() -> None:
    source = S3Location(bucket="user-in", prefix="incoming/")
    output = S3Location(bucket="user-out", prefix="blurred/")
    assert output_key(source, output, "incoming/2026/a.jpg") == "blurred/2026/a.jpg"
    assert output_key(S3Location(bucket="user-in"), S3Location(bucket="user-out"), "a/b.png") == "a/b.png"


JOB = "w" + "0" * 31
OK = DoneEntry(job_id=JOB, outcome=Outcome.SUCCEEDED)


def _record(status: JobStatus, attempts: int = 0, age: timedelta = timedelta(0)) -> JobRecord:
    error = JobError(code="X", message="x") if status is JobStatus.FAILED else None
    return JobRecord.model_validate(
        {
            "id": JOB,
            "owner": "watch",
            "status": status,
            "attempts": attempts,
            "created_at": NOW - age,
            "options": {},
            "error": error,
        }
    )


@pytest.mark.parametrize(
    ("key", "entry", "record", "after", "step"),
    [
        ("in/a.jpg", None, None, "keep", Step.START),
        ("in/a.JPEG", None, None, "delete", Step.START),
        ("in/notes.txt", None, None, "delete", Step.SKIP),
        ("in/a.jpg", None, _record(JobStatus.QUEUED), "keep", Step.NOTHING),
        ("in/a.jpg", None, _record(JobStatus.RUNNING, 1), "keep", Step.NOTHING),
        ("in/a.jpg", None, _record(JobStatus.QUEUED, 1, STALE_QUEUED * 2), "keep", Step.NOTHING),  # arq's
        ("in/a.jpg", None, _record(JobStatus.QUEUED, 0, STALE_QUEUED * 2), "keep", Step.REQUEUE),
        ("in/a.jpg", None, _record(JobStatus.SUCCEEDED, 1), "tag", Step.FINISH),
        ("in/a.jpg", None, _record(JobStatus.FAILED, 3), "delete", Step.FINISH),
        ("in/a.jpg", DoneEntry(job_id=JOB, outcome=Outcome.SUCCEEDED), None, "keep", Step.NOTHING),
        ("in/a.jpg", DoneEntry(job_id=JOB, outcome=Outcome.SUCCEEDED), None, "delete", Step.APPLY),
        # Deleted, yet listed: the same bytes dropped again within the second. Their copy is there.
        ("in/a.jpg", OK.model_copy(update={"applied": True}), None, "delete", Step.APPLY),
        ("in/a.jpg", OK.model_copy(update={"applied": True}), None, "tag", Step.NOTHING),
        ("in/a.jpg", DoneEntry(job_id=JOB, outcome=Outcome.FAILED), None, "tag", Step.APPLY),
        ("in/a.jpg", DoneEntry(job_id=JOB, outcome=Outcome.FAILED, applied=True), None, "tag", Step.NOTHING),
        # An entry of an earlier upload under the same key: this one is new work.
        (
            "in/a.jpg",
            OK.model_copy(update={"job_id": "w1", "applied": True}),
            None,
            "keep",
            Step.START,
        ),
        (
            "in/x.bin",
            DoneEntry(job_id=JOB, outcome=Outcome.SKIPPED, applied=True),
            None,
            "keep",
            Step.NOTHING,
        ),
    ],
)
def test_next_step(
    key: str, entry: DoneEntry | None, record: JobRecord | None, after: str, step: Step
) -> None:
    assert next_step(key, JOB, entry, record, after, NOW) is step  # type: ignore[arg-type]
