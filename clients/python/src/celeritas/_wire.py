"""Conversions between the generated protobuf messages and the client's plain values.

This module and the two transports (``client.py``, ``aio.py``) are the only code that touches
the generated ``celeritas.v1`` types; everything above them sees ``celeritas.models``. The sync
and asyncio clients build their requests and read their answers here, so they cannot drift
apart.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import IO, Any, cast

from google.protobuf import duration_pb2, timestamp_pb2
from grpc_health.v1 import health_pb2

from celeritas import models
from celeritas.v1 import files_pb2, inspect_pb2, schedules_pb2, tasks_pb2

_STATE_BY_NUMBER: dict[int, models.TaskState] = {
    tasks_pb2.TASK_STATE_PENDING: models.TaskState.PENDING,
    tasks_pb2.TASK_STATE_SCHEDULED: models.TaskState.SCHEDULED,
    tasks_pb2.TASK_STATE_LEASED: models.TaskState.LEASED,
    tasks_pb2.TASK_STATE_RUNNING: models.TaskState.RUNNING,
    tasks_pb2.TASK_STATE_SUCCEEDED: models.TaskState.SUCCEEDED,
    tasks_pb2.TASK_STATE_FAILED: models.TaskState.FAILED,
    tasks_pb2.TASK_STATE_CANCELLED: models.TaskState.CANCELLED,
    tasks_pb2.TASK_STATE_EXPIRED: models.TaskState.EXPIRED,
    tasks_pb2.TASK_STATE_WAITING: models.TaskState.WAITING,
}

_HEALTH_BY_NUMBER: dict[int, models.HealthStatus] = {
    health_pb2.HealthCheckResponse.SERVING: models.HealthStatus.SERVING,
    health_pb2.HealthCheckResponse.NOT_SERVING: models.HealthStatus.NOT_SERVING,
    health_pb2.HealthCheckResponse.SERVICE_UNKNOWN: models.HealthStatus.SERVICE_UNKNOWN,
}

# The longest GetTask long poll the server grants; longer waits are made of several polls.
MAX_SERVER_WAIT_SECONDS = 60.0


# Scalars.


def seconds_of(value: models.Seconds, field_name: str) -> float:
    """A duration argument (seconds or timedelta) as float seconds."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{field_name}: expected seconds or a timedelta, got {value!r}")
    return float(value)


def time_left(deadline: float | None) -> float | None:
    """Seconds until the ``time.monotonic()`` moment ``deadline`` (0 once it has passed), for a
    call's timeout; None without a deadline."""
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())


def duration_pb(value: models.Seconds, field_name: str) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    # Negative values go to the server as they are: it is the one validator of specs, and its
    # message names the field.
    message.FromTimedelta(timedelta(seconds=seconds_of(value, field_name)))
    return message


def timestamp_pb(value: datetime, field_name: str) -> timestamp_pb2.Timestamp:
    if not isinstance(value, datetime):
        raise TypeError(f"{field_name}: expected a datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        # A naive datetime means local time to some callers and UTC to others; refusing it is
        # kinder than running a task hours early or late.
        raise ValueError(f"{field_name}: a naive datetime is ambiguous; give one with a tzinfo")
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(value)
    return message


def datetime_of(parent: Any, field_name: str) -> datetime | None:
    """An optional Timestamp field as an aware UTC datetime, None when unset."""
    if not parent.HasField(field_name):
        return None
    moment: datetime = getattr(parent, field_name).ToDatetime(tzinfo=timezone.utc)
    return moment


def timedelta_of(parent: Any, field_name: str) -> timedelta | None:
    """An optional Duration field as a timedelta, None when unset."""
    if not parent.HasField(field_name):
        return None
    duration: timedelta = getattr(parent, field_name).ToTimedelta()
    return duration


def json_text(value: Any, field_name: str) -> str:
    """Arguments as the JSON text the server takes; None becomes empty (the server's `{}`)."""
    if value is None:
        return ""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{field_name}: not JSON-serializable: {error}") from error


def json_value(text: str) -> Any:
    """JSON text from the server, decoded; empty text is None. Text that does not parse is
    returned as it is rather than failing the whole answer over one field."""
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def optional_text(text: str) -> str | None:
    """Proto3 strings are empty when unset; the models say None."""
    return text or None


def task_state_of(number: int) -> models.TaskState:
    return _STATE_BY_NUMBER.get(number, models.TaskState.UNKNOWN)


def new_idempotency_key() -> str:
    """A key for a submission whose caller gave none, so that retrying it is safe."""
    return f"auto-{uuid.uuid4()}"


# Requests.


def task_spec_pb(spec: models.TaskSpec, field_prefix: str) -> tasks_pb2.TaskSpec:
    """A TaskSpec message; ``field_prefix`` (``task``, ``tasks[3]``) names it in errors."""
    message = tasks_pb2.TaskSpec(
        name=spec.name,
        args_json=json_text(spec.args, f"{field_prefix}.args"),
        priority=spec.priority,
        idempotency_key=spec.idempotency_key or new_idempotency_key(),
    )
    if spec.queue is not None:
        message.queue = spec.queue
    if spec.max_retries is not None:
        message.max_retries = spec.max_retries
    if spec.countdown is not None:
        message.countdown.CopyFrom(duration_pb(spec.countdown, f"{field_prefix}.countdown"))
    if spec.eta is not None:
        message.eta.CopyFrom(timestamp_pb(spec.eta, f"{field_prefix}.eta"))
    if isinstance(spec.expires, datetime):
        message.expires_at.CopyFrom(timestamp_pb(spec.expires, f"{field_prefix}.expires"))
    elif spec.expires is not None:
        message.expires_in.CopyFrom(duration_pb(spec.expires, f"{field_prefix}.expires"))
    if spec.soft_time_limit is not None:
        message.soft_time_limit.CopyFrom(
            duration_pb(spec.soft_time_limit, f"{field_prefix}.soft_time_limit")
        )
    if spec.hard_time_limit is not None:
        message.hard_time_limit.CopyFrom(
            duration_pb(spec.hard_time_limit, f"{field_prefix}.hard_time_limit")
        )
    if spec.rate_keys:
        message.rate_keys.update(rate_keys_pb(spec.rate_keys, f"{field_prefix}.rate_keys"))
    if spec.group_key is not None:
        message.group_key = spec.group_key
    if spec.max_concurrency is not None:
        message.max_concurrency = spec.max_concurrency
    return message


_MAX_UINT32 = 2**32 - 1


def rate_keys_pb(rate_keys: Mapping[str, int], field_name: str) -> dict[str, int]:
    """Rate keys and their costs as the map the server takes. Only what the wire cannot carry
    is refused here; the server validates keys and costs and names ``rate_keys``."""
    if not isinstance(rate_keys, Mapping):
        raise TypeError(f"{field_name}: expected a mapping of rate key to cost, got {rate_keys!r}")
    costs: dict[str, int] = {}
    for key, cost in rate_keys.items():
        if not isinstance(key, str):
            raise TypeError(f"{field_name}: a rate key must be a str, got {key!r}")
        if isinstance(cost, bool) or not isinstance(cost, int):
            raise TypeError(f"{field_name}[{key!r}]: a cost must be an int, got {cost!r}")
        if not 0 <= cost <= _MAX_UINT32:
            raise ValueError(f"{field_name}[{key!r}]: a cost must be from 0 to {_MAX_UINT32}, got {cost}")
        costs[key] = cost
    return costs


def submit_task_request(spec: models.TaskSpec) -> tasks_pb2.SubmitTaskRequest:
    return tasks_pb2.SubmitTaskRequest(task=task_spec_pb(spec, "task"))


def submit_tasks_request(specs: Iterable[models.TaskSpec]) -> tasks_pb2.SubmitTasksRequest:
    messages = []
    for index, spec in enumerate(specs):
        if not isinstance(spec, models.TaskSpec):
            raise TypeError(f"tasks[{index}]: expected a celeritas.TaskSpec, got {spec!r}")
        messages.append(task_spec_pb(spec, f"tasks[{index}]"))
    return tasks_pb2.SubmitTasksRequest(tasks=messages)


def get_task_request(task_id: str, wait: models.Seconds | None) -> tasks_pb2.GetTaskRequest:
    request = tasks_pb2.GetTaskRequest(task_id=task_id)
    if wait is not None:
        request.wait.CopyFrom(duration_pb(wait, "wait"))
    return request


def stream_progress_request(
    task_id: str, from_sequence: int | None
) -> tasks_pb2.StreamProgressRequest:
    request = tasks_pb2.StreamProgressRequest(task_id=task_id)
    if from_sequence is not None:
        request.from_sequence = from_sequence
    return request


def list_records_request(
    task_id: str,
    whole_tree: bool,
    kind: str | None,
    status: str | None,
    page_size: int | None,
    page_token: str,
) -> tasks_pb2.ListRecordsRequest:
    return tasks_pb2.ListRecordsRequest(
        task_id=task_id,
        whole_tree=whole_tree,
        kind=kind or "",
        status=status or "",
        page_size=page_size or 0,
        page_token=page_token,
    )


def ping_request(timeout: models.Seconds | None) -> inspect_pb2.PingRequest:
    request = inspect_pb2.PingRequest()
    if timeout is not None:
        request.timeout.CopyFrom(duration_pb(timeout, "timeout"))
    return request


def close_idle_connections_request(
    queue: str | None, timeout: models.Seconds | None
) -> inspect_pb2.CloseIdleConnectionsRequest:
    request = inspect_pb2.CloseIdleConnectionsRequest(queue=queue or "")
    if timeout is not None:
        request.timeout.CopyFrom(duration_pb(timeout, "timeout"))
    return request


_NUMBER_BY_STATE: dict[models.TaskState, tasks_pb2.TaskState] = {
    # The generated enum's numbers are plain ints at run time.
    state: cast("tasks_pb2.TaskState", number) for number, state in _STATE_BY_NUMBER.items()
}


def state_numbers(
    states: Iterable[models.TaskState | str], field_name: str = "states"
) -> list[tasks_pb2.TaskState]:
    """States (members or their names) as the server numbers them; an unknown one raises
    ``ValueError`` naming it by index."""
    numbers = []
    for index, state in enumerate(states):
        try:
            numbers.append(_NUMBER_BY_STATE[models.TaskState(state)])
        except (KeyError, ValueError):
            raise ValueError(f"{field_name}[{index}]: {state!r} is not a task state") from None
    return numbers


def list_tasks_request(
    names: Iterable[str],
    states: Iterable[models.TaskState | str],
    root_id: str | None,
    quiet_for: models.Seconds | None,
    limit: int | None,
    include_payloads: bool = False,
) -> tasks_pb2.ListTasksRequest:
    request = tasks_pb2.ListTasksRequest(
        names=list(names),
        states=state_numbers(states),
        root_id=root_id or "",
        limit=limit or 0,
        include_payloads=include_payloads,
    )
    if quiet_for is not None:
        request.quiet_for.CopyFrom(duration_pb(quiet_for, "quiet_for"))
    return request


def _texts(values: Iterable[str] | None, field_name: str) -> list[str]:
    """A list argument of texts; a lone string (which would iterate as its characters) is
    refused."""
    if values is None:
        return []
    if isinstance(values, str):
        raise TypeError(f"{field_name}: expected a list of strings, got the string {values!r}")
    return list(values)


def task_selector_pb(
    *,
    names: Iterable[str] | None,
    queues: Iterable[str] | None,
    root_id: str | None,
    states: Iterable[models.TaskState | str] | None,
    error_kinds: Iterable[str] | None,
    created_after: datetime | None,
    created_before: datetime | None,
    finished_after: datetime | None,
    finished_before: datetime | None,
) -> tasks_pb2.TaskSelector:
    """A bulk operation's TaskSelector. Moments must be aware datetimes (a naive one raises
    ``ValueError``); an empty selector is left for the server to refuse."""
    if isinstance(states, str):
        raise TypeError(f"states: expected a list of states, got the string {states!r}")
    selector = tasks_pb2.TaskSelector(
        names=_texts(names, "names"),
        queues=_texts(queues, "queues"),
        root_id=root_id or "",
        states=state_numbers(states or ()),
        error_kinds=_texts(error_kinds, "error_kinds"),
    )
    moments = {
        "created_after": created_after,
        "created_before": created_before,
        "finished_after": finished_after,
        "finished_before": finished_before,
    }
    for field_name, moment in moments.items():
        if moment is not None:
            getattr(selector, field_name).CopyFrom(timestamp_pb(moment, field_name))
    return selector


# Answers.


def submitted_task(message: Any) -> models.SubmittedTask:
    """From a SubmitTaskResponse or a SubmittedTask (they share their fields)."""
    return models.SubmittedTask(task_id=message.task_id, created=message.created)


def task_error(message: tasks_pb2.TaskError) -> models.TaskError:
    return models.TaskError(kind=message.kind, message=message.message)


def task(message: tasks_pb2.Task) -> models.Task:
    return models.Task(
        id=message.id,
        name=message.name,
        queue=message.queue,
        priority=message.priority,
        state=task_state_of(message.state),
        args=json_value(message.args_json),
        result=json_value(message.result_json),
        error=task_error(message.error) if message.HasField("error") else None,
        attempt=message.attempt,
        retries=message.retries,
        max_retries=message.max_retries,
        created_at=datetime_of(message, "created_at"),
        run_at=datetime_of(message, "run_at"),
        started_at=datetime_of(message, "started_at"),
        finished_at=datetime_of(message, "finished_at"),
        expires_at=datetime_of(message, "expires_at"),
        worker_id=optional_text(message.worker_id),
        parent_id=optional_text(message.parent_id),
        root_id=message.root_id,
        idempotency_key=optional_text(message.idempotency_key),
        failures=[
            models.AttemptFailure(
                attempt=failure.attempt,
                worker_id=failure.worker_id,
                kind=failure.kind,
                message=failure.message,
                at=datetime_of(failure, "at"),
            )
            for failure in message.failures
        ],
        progress=progress(message.progress) if message.HasField("progress") else None,
        rate_keys=dict(message.rate_keys),
        group_key=optional_text(message.group_key),
        max_concurrency=(
            message.max_concurrency if message.HasField("max_concurrency") else None
        ),
        tree_paused_at=datetime_of(message, "tree_paused_at"),
    )


def tree_pause(message: tasks_pb2.PauseTreeResponse) -> models.TreePause:
    return models.TreePause(
        changed=message.changed,
        paused_at=datetime_of(message, "paused_at"),
        stopping=message.stopping,
    )


def progress(message: tasks_pb2.Progress) -> models.Progress:
    return models.Progress(done=message.done, total=message.total, message=message.message)


def aggregate(message: tasks_pb2.Aggregate) -> models.Aggregate:
    return models.Aggregate(
        tasks_total=message.tasks_total,
        tasks_finished=message.tasks_finished,
        tasks_by_state=dict(sorted(message.tasks_by_state.items())),
        records_by_status=dict(sorted(message.records_by_status.items())),
        progress=progress(message.progress),
    )


def event(message: tasks_pb2.StreamProgressResponse) -> models.Event:
    which = message.WhichOneof("event")
    state_changed = progress_updated = tree_updated = tree_finished = None
    if which == "state_changed":
        change = message.state_changed
        state_changed = models.StateChanged(
            task_id=change.task_id,
            state=task_state_of(change.state),
            error=task_error(change.error) if change.HasField("error") else None,
        )
    elif which == "progress_updated":
        progress_updated = models.ProgressUpdated(
            task_id=message.progress_updated.task_id,
            progress=progress(message.progress_updated.progress),
        )
    elif which == "tree_updated":
        update = message.tree_updated
        tree_updated = models.TreeUpdated(
            tasks_submitted=update.tasks_submitted,
            tasks_finished=update.tasks_finished,
            records_added=update.records_added,
            message=update.message,
        )
    elif which == "tree_finished":
        tree_finished = models.TreeFinished(
            root_state=task_state_of(message.tree_finished.root_state)
        )
    return models.Event(
        sequence=message.sequence,
        root_id=message.root_id,
        at=datetime_of(message, "at"),
        aggregate=aggregate(message.aggregate),
        state_changed=state_changed,
        progress_updated=progress_updated,
        tree_updated=tree_updated,
        tree_finished=tree_finished,
    )


def record(message: tasks_pb2.Record) -> models.Record:
    return models.Record(
        task_id=message.task_id,
        root_id=message.root_id,
        kind=message.kind,
        key=message.key,
        status=message.status,
        data=json_value(message.data_json),
        created_at=datetime_of(message, "created_at"),
        updated_at=datetime_of(message, "updated_at"),
    )


def health_status(message: health_pb2.HealthCheckResponse) -> models.HealthStatus:
    return _HEALTH_BY_NUMBER.get(message.status, models.HealthStatus.UNKNOWN)


# Inspection answers.


def worker_ping(message: inspect_pb2.WorkerPing) -> models.WorkerPing:
    return models.WorkerPing(
        worker_id=message.worker_id,
        hostname=message.hostname,
        answered=message.answered,
        round_trip=timedelta_of(message, "round_trip"),
        coordinator_id=message.coordinator_id,
        detail=message.detail,
    )


def worker_tasks(message: inspect_pb2.WorkerTasks) -> models.WorkerTasks:
    return models.WorkerTasks(
        worker_id=message.worker_id, tasks=[task(entry) for entry in message.tasks]
    )


def task_spec(message: tasks_pb2.TaskSpec) -> models.TaskSpec:
    """A TaskSpec as the server shows it inside a schedule (timing fields are not used there)."""
    return models.TaskSpec(
        name=message.name,
        args=json_value(message.args_json),
        queue=message.queue if message.HasField("queue") else None,
        priority=message.priority,
        max_retries=message.max_retries if message.HasField("max_retries") else None,
        idempotency_key=optional_text(message.idempotency_key),
        soft_time_limit=timedelta_of(message, "soft_time_limit"),
        hard_time_limit=timedelta_of(message, "hard_time_limit"),
        rate_keys=dict(message.rate_keys) or None,
        group_key=optional_text(message.group_key),
        max_concurrency=(
            message.max_concurrency if message.HasField("max_concurrency") else None
        ),
    )


def schedule(message: schedules_pb2.Schedule) -> models.Schedule:
    timing = message.WhichOneof("timing")
    return models.Schedule(
        name=message.name,
        task=task_spec(message.task),
        every=message.every.ToTimedelta() if timing == "every" else None,
        cron=message.cron if timing == "cron" else None,
        timezone=message.timezone or "UTC",
        paused=message.paused,
        next_run_at=datetime_of(message, "next_run_at"),
        last_run_at=datetime_of(message, "last_run_at"),
        last_task_id=optional_text(message.last_task_id),
    )


def scheduled_work(message: inspect_pb2.ScheduledResponse) -> models.ScheduledWork:
    return models.ScheduledWork(
        tasks=[task(entry) for entry in message.tasks],
        schedules=[schedule(entry) for entry in message.schedules],
    )


def worker_stats(message: inspect_pb2.WorkerStatsEntry) -> models.WorkerStats:
    return models.WorkerStats(
        worker_id=message.worker_id,
        hostname=message.hostname,
        pid=message.pid,
        uptime=timedelta_of(message, "uptime"),
        concurrency=message.concurrency,
        prefetch_multiplier=message.prefetch_multiplier,
        processed=dict(message.processed),
        failed=dict(message.failed),
        memory_rss_bytes=message.memory_rss_bytes,
        connected=message.connected,
        coordinator_id=message.coordinator_id,
        version=message.version,
    )


def worker_queues(message: inspect_pb2.WorkerQueues) -> models.WorkerQueues:
    return models.WorkerQueues(
        worker_id=message.worker_id,
        queues=[models.QueueRef(name=queue.name, priority=queue.priority) for queue in message.queues],
        connected=message.connected,
    )


def worker_task_names(message: inspect_pb2.WorkerTaskNames) -> models.WorkerTaskNames:
    return models.WorkerTaskNames(
        worker_id=message.worker_id,
        task_names=list(message.task_names),
        connected=message.connected,
    )


def rate_limits(message: inspect_pb2.RateLimitsResponse) -> models.RateLimits:
    return models.RateLimits(
        limits=[
            models.RateLimitRule(
                pattern=rule.pattern,
                per_second=rule.per_second,
                source="api" if rule.set_through_api else "config",
                set_at=datetime_of(rule, "set_at"),
                set_by=rule.set_by or None,
            )
            for rule in message.limits
        ],
        keys=[
            models.KeyRate(
                key=key.key,
                configured_per_second=key.configured_per_second,
                effective_per_second=key.effective_per_second,
                tokens=key.tokens,
                slowed_at=datetime_of(key, "slowed_at"),
            )
            for key in message.keys
        ],
    )


def rate_limit_set(message: tasks_pb2.SetRateLimitResponse) -> models.RateLimitSet:
    return models.RateLimitSet(
        previous=message.previous if message.HasField("previous") else None,
        governed=message.governed,
    )


def queue_depth(message: inspect_pb2.QueueDepth) -> models.QueueDepth:
    return models.QueueDepth(
        name=message.name,
        priority=message.priority,
        tasks_by_state=dict(sorted(message.tasks_by_state.items())),
        oldest_pending_age=timedelta_of(message, "oldest_pending_age"),
        consumers=message.consumers,
        unserved=dict(sorted(message.unserved.items())),
        paused_at=datetime_of(message, "paused_at"),
    )


#: The most bytes one upload message carries (the contract's limit).
UPLOAD_CHUNK_BYTES = 1024 * 1024

#: What ``upload`` accepts: a path, or a binary file object open for reading.
UploadSource = str | os.PathLike[str] | IO[bytes]


def upload_name(source: UploadSource, name: str | None) -> str:
    """The name a file is stored under: ``name``, else the path's (or file object's) last part."""
    if name is not None:
        return name
    path = source if isinstance(source, (str, os.PathLike)) else getattr(source, "name", None)
    if isinstance(path, (str, os.PathLike)):
        return os.path.basename(os.fspath(path))
    raise ValueError("name: required for a file object that has no name")


def upload_header(name: str, content_type: str | None) -> files_pb2.UploadRequest:
    return files_pb2.UploadRequest(
        header=files_pb2.UploadHeader(name=name, content_type=content_type or "")
    )


def upload_chunk(chunk: bytes) -> files_pb2.UploadRequest:
    return files_pb2.UploadRequest(chunk=chunk)


def upload_requests(
    reader: IO[bytes], name: str, content_type: str | None
) -> Iterator[files_pb2.UploadRequest]:
    """An upload's messages: the header, then the reader's bytes in chunks of 1 MiB."""
    yield upload_header(name, content_type)
    while chunk := reader.read(UPLOAD_CHUNK_BYTES):
        yield upload_chunk(chunk)


def stored_file(message: files_pb2.FileInfo) -> models.StoredFile:
    return models.StoredFile(
        file_id=message.file_id,
        name=message.name,
        content_type=message.content_type,
        size=message.size,
        sha256=message.sha256,
        created_at=datetime_of(message, "created_at"),
    )
