"""The plain values the client takes and returns.

These are frozen dataclasses with standard Python types (``datetime`` in UTC, ``timedelta``,
decoded JSON), never protobuf messages: code using the client does not depend on the wire
format, and values compare, print and pickle as ordinary Python objects. Each mirrors a message
of ``proto/celeritas/v1``; the proto's comments are the authority on what a field means.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

__all__ = [
    "Aggregate",
    "AttemptFailure",
    "BulkResult",
    "Event",
    "HealthStatus",
    "Progress",
    "ProgressUpdated",
    "QueueDepth",
    "QueueRef",
    "Record",
    "Schedule",
    "ScheduledWork",
    "StateChanged",
    "SubmittedTask",
    "Task",
    "TaskError",
    "TaskSpec",
    "TaskState",
    "TreeFinished",
    "TreeUpdated",
    "WorkerPing",
    "WorkerQueues",
    "WorkerStats",
    "WorkerTaskNames",
    "WorkerTasks",
]

#: Seconds as a number, or a ``timedelta``: how every duration argument may be given.
Seconds = float | int | timedelta


def _json_ready(value: Any) -> Any:
    """Data made of dicts, lists and scalars, with moments and durations as JSON can carry
    them (ISO 8601 text, seconds) and enums as their values."""
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value


class TaskState(str, enum.Enum):
    """Where a task is in its life. The values are the state names the server uses in
    aggregates (``Aggregate.tasks_by_state``)."""

    PENDING = "pending"
    SCHEDULED = "scheduled"
    LEASED = "leased"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    WAITING = "waiting"
    #: A state this version of the client does not know: the server is newer.
    UNKNOWN = "unknown"

    @property
    def is_finished(self) -> bool:
        """True for the terminal states: succeeded, failed, cancelled, expired."""
        return self in _FINISHED_STATES


_FINISHED_STATES = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.EXPIRED}
)


class HealthStatus(str, enum.Enum):
    """A coordinator's answer to a health check (``grpc.health.v1``)."""

    SERVING = "serving"
    NOT_SERVING = "not_serving"
    SERVICE_UNKNOWN = "service_unknown"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class TaskSpec:
    """What to run, for :meth:`celeritas.Client.submit_many` (``submit`` takes the same fields
    as arguments). Only ``name`` is required; everything else defaults on the coordinator.

    Durations (``countdown``, ``expires`` as a duration, the time limits) are seconds or
    ``timedelta``; moments (``eta``, ``expires`` as a moment) are timezone-aware ``datetime``.
    When ``idempotency_key`` is None the client generates one, so that retrying the submission
    after a lost answer cannot create the task twice. ``rate_keys`` maps each rate key the task
    carries (``"customer:42"``) to what one run costs (0 means 1); see
    :meth:`celeritas.Client.submit`.
    """

    name: str
    args: Any = None
    queue: str | None = None
    priority: int = 0
    countdown: Seconds | None = None
    eta: datetime | None = None
    expires: Seconds | datetime | None = None
    max_retries: int | None = None
    idempotency_key: str | None = None
    soft_time_limit: Seconds | None = None
    hard_time_limit: Seconds | None = None
    rate_keys: Mapping[str, int] | None = None
    group_key: str | None = None
    max_concurrency: int | None = None


@dataclass(frozen=True)
class TreePause:
    """What :meth:`celeritas.Client.pause_tree` did."""

    #: False when the tree was paused already.
    changed: bool
    #: Since when it is paused.
    paused_at: datetime | None
    #: Running tasks asked to stop (a campaign batch stops after its current message).
    stopping: int


@dataclass(frozen=True)
class RateLimitSet:
    """What :meth:`celeritas.Client.set_rate_limit` did."""

    #: The rate the key had through the API before, if any.
    previous: str | None
    #: Tasks already waiting that the limit now covers.
    governed: int


@dataclass(frozen=True)
class RateLimitRule:
    """A rate limit in force (``inspect.rate_limits()``)."""

    #: The key, or a pattern where ``*`` stands for any text.
    pattern: str
    #: Its rate, per second.
    per_second: float
    #: ``"api"`` (set with :meth:`celeritas.Client.set_rate_limit`) or ``"config"``.
    source: str
    #: When it was set through the API.
    set_at: datetime | None
    #: Who set it (a token's name), when known.
    set_by: str | None


@dataclass(frozen=True)
class KeyRate:
    """A limited key in use: the rate it runs at now (lower after pushback)."""

    key: str
    configured_per_second: float
    effective_per_second: float
    #: Tokens left in its bucket (negative after a costly lease).
    tokens: float
    #: When pushback last slowed it, if ever.
    slowed_at: datetime | None


@dataclass(frozen=True)
class RateLimits:
    """What ``inspect.rate_limits()`` answers."""

    #: Every limit in force, the first match first.
    limits: list[RateLimitRule]
    #: Each limited key used so far.
    keys: list[KeyRate]


@dataclass(frozen=True)
class SubmittedTask:
    """The outcome of one submission."""

    #: The task's id: new, or the existing task's when the idempotency key was seen before.
    task_id: str
    #: False when the idempotency key matched an existing task and nothing was created.
    created: bool


@dataclass(frozen=True)
class TaskError:
    """Why an attempt failed."""

    #: A short machine-readable kind, such as ``"time_limit"`` or ``"smtp_permanent"``.
    kind: str
    #: A human-readable message.
    message: str


@dataclass(frozen=True)
class AttemptFailure:
    """One failed attempt of a task."""

    attempt: int
    worker_id: str
    kind: str
    message: str
    at: datetime | None


@dataclass(frozen=True)
class Task:
    """Everything the coordinator knows about one task."""

    id: str
    name: str
    queue: str
    priority: int
    state: TaskState
    #: The arguments as submitted, decoded from JSON.
    args: Any
    #: The result decoded from JSON once the task succeeded; None before.
    result: Any
    #: The error of the last failed attempt, if any.
    error: TaskError | None
    #: How many leases the task has had.
    attempt: int
    #: How many failed attempts were retried.
    retries: int
    max_retries: int
    created_at: datetime | None
    #: The earliest moment it may run (its ETA, or the end of a retry's backoff).
    run_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    expires_at: datetime | None
    worker_id: str | None
    parent_id: str | None
    #: The root of its tree: its own id for a task without a parent.
    root_id: str
    idempotency_key: str | None
    #: Every failed attempt, oldest first.
    failures: list[AttemptFailure] = field(default_factory=list)
    #: The last progress the task reported, if any.
    progress: Progress | None = None
    #: Its rate keys and costs (``task:<name>`` included when its name has a limit).
    rate_keys: dict[str, int] = field(default_factory=dict)
    #: Its fairness group, if any.
    group_key: str | None = None
    #: At most this many tasks of its name and group run at once, if limited.
    max_concurrency: int | None = None
    #: When its tree was paused, while it is (``Client.pause_tree``).
    tree_paused_at: datetime | None = None

    @property
    def is_finished(self) -> bool:
        """True once the task is in a terminal state."""
        return self.state.is_finished

    @property
    def is_root(self) -> bool:
        """True for a task without a parent: the only kind whose progress can be streamed."""
        return self.root_id == self.id


@dataclass(frozen=True)
class Progress:
    """Done and total units of work, as tasks report them."""

    done: int = 0
    #: 0 when unknown.
    total: int = 0
    message: str = ""


@dataclass(frozen=True)
class Aggregate:
    """The state of a task tree at the moment of an event: enough for a progress bar."""

    #: Tasks in the tree, root included.
    tasks_total: int
    #: Tasks of the tree in a terminal state.
    tasks_finished: int
    #: Tasks by state name (``"pending"``, ``"running"``, ...; see :class:`TaskState`).
    tasks_by_state: dict[str, int]
    #: Records emitted in the tree, by status (``"delivered"``, ``"failed"``, ...).
    records_by_status: dict[str, int]
    #: The sum of the progress the tree's tasks reported.
    progress: Progress


@dataclass(frozen=True)
class StateChanged:
    """The root task changed state."""

    task_id: str
    state: TaskState
    #: The error, for a failure.
    error: TaskError | None


@dataclass(frozen=True)
class ProgressUpdated:
    """The root task reported progress (descendants' reports are summed in the aggregate)."""

    task_id: str
    progress: Progress


@dataclass(frozen=True)
class TreeUpdated:
    """Something changed among the descendants since the previous event (throttled to a few
    events a second per tree)."""

    tasks_submitted: int
    tasks_finished: int
    records_added: int
    #: The latest progress message reported in the tree, if any.
    message: str


@dataclass(frozen=True)
class TreeFinished:
    """Every task of the tree has finished: the last event of a stream."""

    root_state: TaskState


@dataclass(frozen=True)
class Event:
    """One event of a task tree. Exactly one of ``state_changed``, ``progress_updated``,
    ``tree_updated`` and ``tree_finished`` is set; ``kind`` names it."""

    #: Increases by one with each event of the tree; resume after it with ``from_sequence``.
    sequence: int
    root_id: str
    at: datetime | None
    #: The tree as of this event.
    aggregate: Aggregate
    state_changed: StateChanged | None = None
    progress_updated: ProgressUpdated | None = None
    tree_updated: TreeUpdated | None = None
    tree_finished: TreeFinished | None = None

    @property
    def kind(self) -> str:
        """``"state_changed"``, ``"progress_updated"``, ``"tree_updated"``,
        ``"tree_finished"``, or ``"unknown"`` for an event this client version does not know."""
        for name in ("state_changed", "progress_updated", "tree_updated", "tree_finished"):
            if getattr(self, name) is not None:
                return name
        return "unknown"

    @property
    def is_last(self) -> bool:
        """True for the tree's last event (``tree_finished``)."""
        return self.tree_finished is not None

    def to_dict(self) -> dict[str, Any]:
        """The event as JSON-ready data: its fields plus ``kind``, moments as ISO 8601 text and
        states as their names. ``json.dumps(event.to_dict())`` is what a browser can be sent."""
        return {"kind": self.kind, **_json_ready(asdict(self))}

    def describe(self) -> str:
        """One line for people: what happened, then the tree's totals.

        ``[2] succeeded | tasks 4/5 finished | tree progress 3/3 children submitted``
        """
        if self.state_changed is not None:
            what = self.state_changed.state.value
            if self.state_changed.error is not None:
                what += f" ({self.state_changed.error.kind}: {self.state_changed.error.message})"
        elif self.progress_updated is not None:
            reported = self.progress_updated.progress
            what = f"root progress {reported.done}/{reported.total or '?'} {reported.message}".rstrip()
        elif self.tree_updated is not None:
            update = self.tree_updated
            what = (
                f"tree: +{update.tasks_submitted} submitted, +{update.tasks_finished} finished, "
                f"+{update.records_added} records"
            )
        elif self.tree_finished is not None:
            what = f"tree finished, root {self.tree_finished.root_state.value}"
        else:
            what = "event of an unknown kind"
        parts = [
            f"[{self.sequence}] {what}",
            f"tasks {self.aggregate.tasks_finished}/{self.aggregate.tasks_total} finished",
        ]
        progress = self.aggregate.progress
        if progress.done or progress.total:
            total = progress.total if progress.total else "?"
            parts.append(f"tree progress {progress.done}/{total} {progress.message}".rstrip())
        if self.aggregate.records_by_status:
            counts = " ".join(
                f"{status}={count}" for status, count in sorted(self.aggregate.records_by_status.items())
            )
            parts.append(f"records {counts}")
        return " | ".join(parts)


@dataclass(frozen=True)
class Record:
    """One durable per-item outcome a task emitted (a delivery, a validated contact)."""

    #: The task that (last) wrote it.
    task_id: str
    root_id: str
    kind: str
    #: Unique per root task and kind, such as an email address.
    key: str
    status: str
    #: Anything else the task stored, decoded from JSON (None when it stored nothing).
    data: Any
    created_at: datetime | None
    updated_at: datetime | None


# Inspection (celery inspect), InspectService in proto/celeritas/v1/inspect.proto.


@dataclass(frozen=True)
class WorkerPing:
    """One worker's answer to a ping."""

    worker_id: str
    hostname: str
    answered: bool
    #: The round trip, when it answered.
    round_trip: timedelta | None
    #: The coordinator it is connected to.
    coordinator_id: str
    #: Why there is no round trip (connected elsewhere, did not answer).
    detail: str


@dataclass(frozen=True)
class WorkerTasks:
    """The tasks one worker runs (``active``) or holds unstarted (``reserved``)."""

    worker_id: str
    tasks: list[Task]


@dataclass(frozen=True)
class Schedule:
    """A periodic schedule (beat)."""

    name: str
    #: What each tick submits.
    task: TaskSpec
    #: Set for an interval schedule.
    every: timedelta | None
    #: Set for a cron schedule.
    cron: str | None
    timezone: str
    paused: bool
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_task_id: str | None


@dataclass(frozen=True)
class ScheduledWork:
    """Tasks waiting for their ETA or a retry's backoff, and the periodic schedules."""

    #: Soonest first.
    tasks: list[Task]
    schedules: list[Schedule]


@dataclass(frozen=True)
class WorkerStats:
    """One worker's process and counters."""

    worker_id: str
    hostname: str
    pid: int
    uptime: timedelta | None
    concurrency: int
    prefetch_multiplier: int
    #: Attempts ended, by task name.
    processed: dict[str, int]
    #: Attempts failed, by task name.
    failed: dict[str, int]
    memory_rss_bytes: int
    connected: bool
    coordinator_id: str
    version: str


@dataclass(frozen=True)
class QueueRef:
    """A queue and its priority."""

    name: str
    priority: int


@dataclass(frozen=True)
class WorkerQueues:
    """The queues one worker consumes, highest priority first."""

    worker_id: str
    queues: list[QueueRef]
    connected: bool


@dataclass(frozen=True)
class WorkerTaskNames:
    """The task names one worker runs."""

    worker_id: str
    task_names: list[str]
    connected: bool


@dataclass(frozen=True)
class QueueDepth:
    """One queue's depth."""

    name: str
    priority: int
    #: Unfinished tasks by state name: pending, scheduled, leased, running, waiting.
    tasks_by_state: dict[str, int]
    #: How long its oldest pending task has waited; None when nothing is pending.
    oldest_pending_age: timedelta | None
    #: Workers connected to the answering coordinator that consume it.
    consumers: int
    #: Pending tasks by task name that no connected worker of the queue registered; they wait
    #: for a worker that does (a task is leased only to workers that registered its name).
    unserved: dict[str, int]
    #: Since when the queue is paused (``pause_queue``): its tasks are not leased until it is
    #: resumed. None when it is not paused.
    paused_at: datetime | None = None


@dataclass(frozen=True)
class BulkResult:
    """What a bulk ``retry_tasks`` or ``cancel_tasks`` did."""

    #: How many tasks matched the selector when the call began.
    matched: int
    #: How many of them were retried / cancelled; 0 for a dry run. A task that finished (or,
    #: for a retry, was retried) meanwhile is matched but not changed, and descendants cancelled
    #: along with a matched task are not counted.
    changed: int


@dataclass(frozen=True)
class StoredFile:
    """A file stored in the coordinator by ``upload``; pass ``file_id`` in a task's args."""

    #: The file's id (UUID text).
    file_id: str
    #: The name given at upload.
    name: str
    #: The media type given at upload, ``application/octet-stream`` when none was.
    content_type: str
    #: The size in bytes.
    size: int
    #: The SHA-256 digest of the bytes, as 64 lowercase hexadecimal digits.
    sha256: str
    #: When the upload began.
    created_at: datetime | None
