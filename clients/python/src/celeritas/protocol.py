"""The worker protocol (``proto/celeritas/v1/workers.proto``) as plain values.

The runtime speaks only these; ``celeritas._worker_wire`` converts them to and from the
generated messages. The limits are the coordinator's (``src/domain/protocol.rs``): what passes
them is cut here, where the text enters, rather than refused in the middle of a batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from celeritas.models import TaskSpec

#: The longest failure kind the coordinator keeps.
MAX_FAILURE_KIND_BYTES = 128
#: The longest failure message the coordinator keeps.
MAX_FAILURE_MESSAGE_BYTES = 16 * 1024
#: The longest progress message or control reply the coordinator keeps.
MAX_NOTE_BYTES = 4 * 1024
#: The most records one message carries.
RECORDS_PER_MESSAGE = 1_000


def cut(text: str, limit: int) -> str:
    """``text`` at most ``limit`` UTF-8 bytes long, cut on a character boundary, without NUL
    (which no store holds) and with lone surrogates replaced."""
    cleaned = text.replace("\x00", "\ufffd").encode("utf-8", errors="replace")
    if len(cleaned) <= limit:
        return cleaned.decode("utf-8")
    return cleaned[:limit].decode("utf-8", errors="ignore")


@dataclass(frozen=True, order=True)
class LeaseToken:
    """One lease of one task: only its holder may report on it."""

    task_id: str
    attempt: int

    def __str__(self) -> str:
        return f"{self.task_id}#{self.attempt}"


@dataclass(frozen=True)
class Lease:
    """A task handed to this worker."""

    token: LeaseToken
    name: str
    args_json: str
    queue: str
    retries: int
    max_retries: int
    #: Seconds; None when the coordinator sent none.
    soft_time_limit: float | None
    hard_time_limit: float | None
    expires_at: datetime | None
    parent_id: str | None
    root_id: str
    priority: int
    run_at: datetime | None


@dataclass(frozen=True)
class Success:
    """An attempt that returned: its result as JSON text."""

    result_json: str


@dataclass(frozen=True)
class Failure:
    """An attempt that failed."""

    kind: str
    message: str
    retryable: bool
    #: Seconds; None lets the task's configured backoff decide.
    retry_after: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", cut(self.kind, MAX_FAILURE_KIND_BYTES) or "error")
        object.__setattr__(self, "message", cut(self.message, MAX_FAILURE_MESSAGE_BYTES))


Outcome = Success | Failure


@dataclass(frozen=True)
class RecordEntry:
    """One record a task emits."""

    kind: str
    key: str
    status: str
    #: JSON text; empty means null.
    data_json: str = ""


@dataclass(frozen=True)
class Hello:
    worker_id: str
    hostname: str
    pid: int
    queues: list[str]
    concurrency: int
    prefetch_multiplier: int
    task_names: list[str]
    version: str
    held_leases: list[LeaseToken]


@dataclass(frozen=True)
class Stats:
    processed: dict[str, int]
    failed: dict[str, int]
    memory_rss_bytes: int
    started_at: datetime


# What the worker says.


@dataclass(frozen=True)
class Credit:
    grant: int


@dataclass(frozen=True)
class Started:
    token: LeaseToken
    at: datetime


@dataclass(frozen=True)
class ProgressReport:
    token: LeaseToken
    done: int
    total: int
    message: str


@dataclass(frozen=True)
class Result:
    token: LeaseToken
    outcome: Outcome


@dataclass(frozen=True)
class Heartbeat:
    stats: Stats


@dataclass(frozen=True)
class Release:
    tokens: list[LeaseToken]


@dataclass(frozen=True)
class ControlReply:
    request_id: int
    detail: str


@dataclass(frozen=True)
class SubmitChildren:
    request_id: int
    token: LeaseToken
    children: list[TaskSpec]
    callback: TaskSpec | None


@dataclass(frozen=True)
class EmitRecords:
    token: LeaseToken
    records: list[RecordEntry]


@dataclass(frozen=True)
class QueryRecords:
    request_id: int
    token: LeaseToken
    kind: str
    status: str | None


WorkerMessage = (
    Hello
    | Credit
    | Started
    | ProgressReport
    | Result
    | Heartbeat
    | Release
    | ControlReply
    | SubmitChildren
    | EmitRecords
    | QueryRecords
)


# What the coordinator says.


@dataclass(frozen=True)
class Welcome:
    coordinator_id: str
    #: Seconds.
    heartbeat_interval: float
    kept_leases: list[LeaseToken] = field(default_factory=list)


@dataclass(frozen=True)
class Cancel:
    token: LeaseToken
    terminate: bool
    reason: str


@dataclass(frozen=True)
class Control:
    request_id: int
    #: "ping", "drain", "close_idle_connections", or "unsupported" for a command this worker
    #: does not know.
    command: str


@dataclass(frozen=True)
class ResultAck:
    token: LeaseToken
    accepted: bool
    reason: str


@dataclass(frozen=True)
class ChildrenSubmitted:
    request_id: int
    task_ids: list[str]
    callback_id: str | None
    error: str | None
    retryable: bool


@dataclass(frozen=True)
class RecordsQueried:
    request_id: int
    keys: list[str]
    error: str | None
    retryable: bool


CoordinatorMessage = (
    Welcome | Lease | Cancel | Control | ResultAck | ChildrenSubmitted | RecordsQueried | None
)
