import datetime

from celeritas.v1 import tasks_pb2 as _tasks_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LeaseToken(_message.Message):
    __slots__ = ("task_id", "attempt")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class ConnectRequest(_message.Message):
    __slots__ = ("hello", "credit", "started", "progress", "result", "heartbeat", "release", "control_reply", "submit_children", "emit_records", "query_records", "batch", "slow_down")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    CREDIT_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    CONTROL_REPLY_FIELD_NUMBER: _ClassVar[int]
    SUBMIT_CHILDREN_FIELD_NUMBER: _ClassVar[int]
    EMIT_RECORDS_FIELD_NUMBER: _ClassVar[int]
    QUERY_RECORDS_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    SLOW_DOWN_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    credit: Credit
    started: TaskStarted
    progress: TaskProgress
    result: TaskResult
    heartbeat: Heartbeat
    release: ReleaseLeases
    control_reply: ControlReply
    submit_children: SubmitChildren
    emit_records: EmitRecords
    query_records: QueryRecords
    batch: WorkerBatch
    slow_down: SlowDown
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., credit: _Optional[_Union[Credit, _Mapping]] = ..., started: _Optional[_Union[TaskStarted, _Mapping]] = ..., progress: _Optional[_Union[TaskProgress, _Mapping]] = ..., result: _Optional[_Union[TaskResult, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., release: _Optional[_Union[ReleaseLeases, _Mapping]] = ..., control_reply: _Optional[_Union[ControlReply, _Mapping]] = ..., submit_children: _Optional[_Union[SubmitChildren, _Mapping]] = ..., emit_records: _Optional[_Union[EmitRecords, _Mapping]] = ..., query_records: _Optional[_Union[QueryRecords, _Mapping]] = ..., batch: _Optional[_Union[WorkerBatch, _Mapping]] = ..., slow_down: _Optional[_Union[SlowDown, _Mapping]] = ...) -> None: ...

class SlowDown(_message.Message):
    __slots__ = ("lease", "key")
    LEASE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    lease: LeaseToken
    key: str
    def __init__(self, lease: _Optional[_Union[LeaseToken, _Mapping]] = ..., key: _Optional[str] = ...) -> None: ...

class WorkerBatch(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[ConnectRequest]
    def __init__(self, messages: _Optional[_Iterable[_Union[ConnectRequest, _Mapping]]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("worker_id", "hostname", "pid", "queues", "concurrency", "prefetch_multiplier", "task_names", "version", "held_leases", "accepts_batches")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    PREFETCH_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    TASK_NAMES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HELD_LEASES_FIELD_NUMBER: _ClassVar[int]
    ACCEPTS_BATCHES_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    hostname: str
    pid: int
    queues: _containers.RepeatedScalarFieldContainer[str]
    concurrency: int
    prefetch_multiplier: int
    task_names: _containers.RepeatedScalarFieldContainer[str]
    version: str
    held_leases: _containers.RepeatedCompositeFieldContainer[LeaseToken]
    accepts_batches: bool
    def __init__(self, worker_id: _Optional[str] = ..., hostname: _Optional[str] = ..., pid: _Optional[int] = ..., queues: _Optional[_Iterable[str]] = ..., concurrency: _Optional[int] = ..., prefetch_multiplier: _Optional[int] = ..., task_names: _Optional[_Iterable[str]] = ..., version: _Optional[str] = ..., held_leases: _Optional[_Iterable[_Union[LeaseToken, _Mapping]]] = ..., accepts_batches: _Optional[bool] = ...) -> None: ...

class Credit(_message.Message):
    __slots__ = ("grant",)
    GRANT_FIELD_NUMBER: _ClassVar[int]
    grant: int
    def __init__(self, grant: _Optional[int] = ...) -> None: ...

class TaskStarted(_message.Message):
    __slots__ = ("lease", "started_at")
    LEASE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    lease: LeaseToken
    started_at: _timestamp_pb2.Timestamp
    def __init__(self, lease: _Optional[_Union[LeaseToken, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TaskProgress(_message.Message):
    __slots__ = ("lease", "done", "total", "message")
    LEASE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    lease: LeaseToken
    done: int
    total: int
    message: str
    def __init__(self, lease: _Optional[_Union[LeaseToken, _Mapping]] = ..., done: _Optional[int] = ..., total: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class TaskSuccess(_message.Message):
    __slots__ = ("result_json",)
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    result_json: str
    def __init__(self, result_json: _Optional[str] = ...) -> None: ...

class TaskFailure(_message.Message):
    __slots__ = ("kind", "message", "retryable", "retry_after")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    kind: str
    message: str
    retryable: bool
    retry_after: _duration_pb2.Duration
    def __init__(self, kind: _Optional[str] = ..., message: _Optional[str] = ..., retryable: _Optional[bool] = ..., retry_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("lease", "success", "failure")
    LEASE_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    lease: LeaseToken
    success: TaskSuccess
    failure: TaskFailure
    def __init__(self, lease: _Optional[_Union[LeaseToken, _Mapping]] = ..., success: _Optional[_Union[TaskSuccess, _Mapping]] = ..., failure: _Optional[_Union[TaskFailure, _Mapping]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("stats",)
    STATS_FIELD_NUMBER: _ClassVar[int]
    stats: WorkerStats
    def __init__(self, stats: _Optional[_Union[WorkerStats, _Mapping]] = ...) -> None: ...

class WorkerStats(_message.Message):
    __slots__ = ("processed", "failed", "memory_rss_bytes", "started_at")
    class ProcessedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class FailedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    PROCESSED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    MEMORY_RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    processed: _containers.ScalarMap[str, int]
    failed: _containers.ScalarMap[str, int]
    memory_rss_bytes: int
    started_at: _timestamp_pb2.Timestamp
    def __init__(self, processed: _Optional[_Mapping[str, int]] = ..., failed: _Optional[_Mapping[str, int]] = ..., memory_rss_bytes: _Optional[int] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SubmitChildren(_message.Message):
    __slots__ = ("request_id", "lease", "children", "callback")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    CALLBACK_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    lease: LeaseToken
    children: _containers.RepeatedCompositeFieldContainer[_tasks_pb2.TaskSpec]
    callback: _tasks_pb2.TaskSpec
    def __init__(self, request_id: _Optional[int] = ..., lease: _Optional[_Union[LeaseToken, _Mapping]] = ..., children: _Optional[_Iterable[_Union[_tasks_pb2.TaskSpec, _Mapping]]] = ..., callback: _Optional[_Union[_tasks_pb2.TaskSpec, _Mapping]] = ...) -> None: ...

class RecordEntry(_message.Message):
    __slots__ = ("kind", "key", "status", "data_json")
    KIND_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DATA_JSON_FIELD_NUMBER: _ClassVar[int]
    kind: str
    key: str
    status: str
    data_json: str
    def __init__(self, kind: _Optional[str] = ..., key: _Optional[str] = ..., status: _Optional[str] = ..., data_json: _Optional[str] = ...) -> None: ...

class EmitRecords(_message.Message):
    __slots__ = ("lease", "records")
    LEASE_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    lease: LeaseToken
    records: _containers.RepeatedCompositeFieldContainer[RecordEntry]
    def __init__(self, lease: _Optional[_Union[LeaseToken, _Mapping]] = ..., records: _Optional[_Iterable[_Union[RecordEntry, _Mapping]]] = ...) -> None: ...

class QueryRecords(_message.Message):
    __slots__ = ("request_id", "lease", "kind", "status")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    lease: LeaseToken
    kind: str
    status: str
    def __init__(self, request_id: _Optional[int] = ..., lease: _Optional[_Union[LeaseToken, _Mapping]] = ..., kind: _Optional[str] = ..., status: _Optional[str] = ...) -> None: ...

class ReleaseLeases(_message.Message):
    __slots__ = ("leases",)
    LEASES_FIELD_NUMBER: _ClassVar[int]
    leases: _containers.RepeatedCompositeFieldContainer[LeaseToken]
    def __init__(self, leases: _Optional[_Iterable[_Union[LeaseToken, _Mapping]]] = ...) -> None: ...

class ControlReply(_message.Message):
    __slots__ = ("request_id", "detail")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    detail: str
    def __init__(self, request_id: _Optional[int] = ..., detail: _Optional[str] = ...) -> None: ...

class ConnectResponse(_message.Message):
    __slots__ = ("welcome", "lease", "cancel", "control", "result_ack", "children_submitted", "records_queried", "batch")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    RESULT_ACK_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_SUBMITTED_FIELD_NUMBER: _ClassVar[int]
    RECORDS_QUERIED_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    lease: Lease
    cancel: Cancel
    control: Control
    result_ack: ResultAck
    children_submitted: ChildrenSubmitted
    records_queried: RecordsQueried
    batch: CoordinatorBatch
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., lease: _Optional[_Union[Lease, _Mapping]] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ..., control: _Optional[_Union[Control, _Mapping]] = ..., result_ack: _Optional[_Union[ResultAck, _Mapping]] = ..., children_submitted: _Optional[_Union[ChildrenSubmitted, _Mapping]] = ..., records_queried: _Optional[_Union[RecordsQueried, _Mapping]] = ..., batch: _Optional[_Union[CoordinatorBatch, _Mapping]] = ...) -> None: ...

class CoordinatorBatch(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[ConnectResponse]
    def __init__(self, messages: _Optional[_Iterable[_Union[ConnectResponse, _Mapping]]] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("coordinator_id", "heartbeat_interval", "kept_leases")
    COORDINATOR_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    KEPT_LEASES_FIELD_NUMBER: _ClassVar[int]
    coordinator_id: str
    heartbeat_interval: _duration_pb2.Duration
    kept_leases: _containers.RepeatedCompositeFieldContainer[LeaseToken]
    def __init__(self, coordinator_id: _Optional[str] = ..., heartbeat_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., kept_leases: _Optional[_Iterable[_Union[LeaseToken, _Mapping]]] = ...) -> None: ...

class Lease(_message.Message):
    __slots__ = ("token", "name", "args_json", "queue", "retries", "max_retries", "soft_time_limit", "hard_time_limit", "expires_at", "parent_id", "root_id", "priority", "run_at")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    SOFT_TIME_LIMIT_FIELD_NUMBER: _ClassVar[int]
    HARD_TIME_LIMIT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    ROOT_ID_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    RUN_AT_FIELD_NUMBER: _ClassVar[int]
    token: LeaseToken
    name: str
    args_json: str
    queue: str
    retries: int
    max_retries: int
    soft_time_limit: _duration_pb2.Duration
    hard_time_limit: _duration_pb2.Duration
    expires_at: _timestamp_pb2.Timestamp
    parent_id: str
    root_id: str
    priority: int
    run_at: _timestamp_pb2.Timestamp
    def __init__(self, token: _Optional[_Union[LeaseToken, _Mapping]] = ..., name: _Optional[str] = ..., args_json: _Optional[str] = ..., queue: _Optional[str] = ..., retries: _Optional[int] = ..., max_retries: _Optional[int] = ..., soft_time_limit: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., hard_time_limit: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., parent_id: _Optional[str] = ..., root_id: _Optional[str] = ..., priority: _Optional[int] = ..., run_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Cancel(_message.Message):
    __slots__ = ("lease", "terminate", "reason")
    LEASE_FIELD_NUMBER: _ClassVar[int]
    TERMINATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    lease: LeaseToken
    terminate: bool
    reason: str
    def __init__(self, lease: _Optional[_Union[LeaseToken, _Mapping]] = ..., terminate: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class Control(_message.Message):
    __slots__ = ("request_id", "ping", "drain", "close_idle_connections")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    CLOSE_IDLE_CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    ping: Ping
    drain: Drain
    close_idle_connections: CloseIdleConnections
    def __init__(self, request_id: _Optional[int] = ..., ping: _Optional[_Union[Ping, _Mapping]] = ..., drain: _Optional[_Union[Drain, _Mapping]] = ..., close_idle_connections: _Optional[_Union[CloseIdleConnections, _Mapping]] = ...) -> None: ...

class Ping(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Drain(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CloseIdleConnections(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResultAck(_message.Message):
    __slots__ = ("lease", "accepted", "reason")
    LEASE_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    lease: LeaseToken
    accepted: bool
    reason: str
    def __init__(self, lease: _Optional[_Union[LeaseToken, _Mapping]] = ..., accepted: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class ChildrenSubmitted(_message.Message):
    __slots__ = ("request_id", "task_ids", "callback_id", "error", "retryable")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    CALLBACK_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    task_ids: _containers.RepeatedScalarFieldContainer[str]
    callback_id: str
    error: str
    retryable: bool
    def __init__(self, request_id: _Optional[int] = ..., task_ids: _Optional[_Iterable[str]] = ..., callback_id: _Optional[str] = ..., error: _Optional[str] = ..., retryable: _Optional[bool] = ...) -> None: ...

class RecordsQueried(_message.Message):
    __slots__ = ("request_id", "keys", "error", "retryable")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    keys: _containers.RepeatedScalarFieldContainer[str]
    error: str
    retryable: bool
    def __init__(self, request_id: _Optional[int] = ..., keys: _Optional[_Iterable[str]] = ..., error: _Optional[str] = ..., retryable: _Optional[bool] = ...) -> None: ...
