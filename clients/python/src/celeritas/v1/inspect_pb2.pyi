import datetime

from celeritas.v1 import schedules_pb2 as _schedules_pb2
from celeritas.v1 import tasks_pb2 as _tasks_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PingRequest(_message.Message):
    __slots__ = ("timeout",)
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    timeout: _duration_pb2.Duration
    def __init__(self, timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class WorkerPing(_message.Message):
    __slots__ = ("worker_id", "hostname", "answered", "round_trip", "coordinator_id", "detail")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_FIELD_NUMBER: _ClassVar[int]
    ROUND_TRIP_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_ID_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    hostname: str
    answered: bool
    round_trip: _duration_pb2.Duration
    coordinator_id: str
    detail: str
    def __init__(self, worker_id: _Optional[str] = ..., hostname: _Optional[str] = ..., answered: _Optional[bool] = ..., round_trip: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., coordinator_id: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class PingResponse(_message.Message):
    __slots__ = ("workers",)
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[WorkerPing]
    def __init__(self, workers: _Optional[_Iterable[_Union[WorkerPing, _Mapping]]] = ...) -> None: ...

class WorkerTasks(_message.Message):
    __slots__ = ("worker_id", "tasks")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    tasks: _containers.RepeatedCompositeFieldContainer[_tasks_pb2.Task]
    def __init__(self, worker_id: _Optional[str] = ..., tasks: _Optional[_Iterable[_Union[_tasks_pb2.Task, _Mapping]]] = ...) -> None: ...

class ActiveRequest(_message.Message):
    __slots__ = ("limit", "include_args")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_ARGS_FIELD_NUMBER: _ClassVar[int]
    limit: int
    include_args: bool
    def __init__(self, limit: _Optional[int] = ..., include_args: _Optional[bool] = ...) -> None: ...

class ActiveResponse(_message.Message):
    __slots__ = ("workers",)
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[WorkerTasks]
    def __init__(self, workers: _Optional[_Iterable[_Union[WorkerTasks, _Mapping]]] = ...) -> None: ...

class ReservedRequest(_message.Message):
    __slots__ = ("limit", "include_args")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_ARGS_FIELD_NUMBER: _ClassVar[int]
    limit: int
    include_args: bool
    def __init__(self, limit: _Optional[int] = ..., include_args: _Optional[bool] = ...) -> None: ...

class ReservedResponse(_message.Message):
    __slots__ = ("workers",)
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[WorkerTasks]
    def __init__(self, workers: _Optional[_Iterable[_Union[WorkerTasks, _Mapping]]] = ...) -> None: ...

class ScheduledRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class ScheduledResponse(_message.Message):
    __slots__ = ("tasks", "schedules")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    SCHEDULES_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[_tasks_pb2.Task]
    schedules: _containers.RepeatedCompositeFieldContainer[_schedules_pb2.Schedule]
    def __init__(self, tasks: _Optional[_Iterable[_Union[_tasks_pb2.Task, _Mapping]]] = ..., schedules: _Optional[_Iterable[_Union[_schedules_pb2.Schedule, _Mapping]]] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WorkerStatsEntry(_message.Message):
    __slots__ = ("worker_id", "hostname", "pid", "uptime", "concurrency", "prefetch_multiplier", "processed", "failed", "memory_rss_bytes", "connected", "coordinator_id", "version")
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
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    UPTIME_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    PREFETCH_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    PROCESSED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    MEMORY_RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    COORDINATOR_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    hostname: str
    pid: int
    uptime: _duration_pb2.Duration
    concurrency: int
    prefetch_multiplier: int
    processed: _containers.ScalarMap[str, int]
    failed: _containers.ScalarMap[str, int]
    memory_rss_bytes: int
    connected: bool
    coordinator_id: str
    version: str
    def __init__(self, worker_id: _Optional[str] = ..., hostname: _Optional[str] = ..., pid: _Optional[int] = ..., uptime: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., concurrency: _Optional[int] = ..., prefetch_multiplier: _Optional[int] = ..., processed: _Optional[_Mapping[str, int]] = ..., failed: _Optional[_Mapping[str, int]] = ..., memory_rss_bytes: _Optional[int] = ..., connected: _Optional[bool] = ..., coordinator_id: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("workers",)
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[WorkerStatsEntry]
    def __init__(self, workers: _Optional[_Iterable[_Union[WorkerStatsEntry, _Mapping]]] = ...) -> None: ...

class ActiveQueuesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class QueueRef(_message.Message):
    __slots__ = ("name", "priority")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    name: str
    priority: int
    def __init__(self, name: _Optional[str] = ..., priority: _Optional[int] = ...) -> None: ...

class WorkerQueues(_message.Message):
    __slots__ = ("worker_id", "queues", "connected")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    queues: _containers.RepeatedCompositeFieldContainer[QueueRef]
    connected: bool
    def __init__(self, worker_id: _Optional[str] = ..., queues: _Optional[_Iterable[_Union[QueueRef, _Mapping]]] = ..., connected: _Optional[bool] = ...) -> None: ...

class ActiveQueuesResponse(_message.Message):
    __slots__ = ("workers",)
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[WorkerQueues]
    def __init__(self, workers: _Optional[_Iterable[_Union[WorkerQueues, _Mapping]]] = ...) -> None: ...

class RegisteredRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WorkerTaskNames(_message.Message):
    __slots__ = ("worker_id", "task_names", "connected")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_NAMES_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    task_names: _containers.RepeatedScalarFieldContainer[str]
    connected: bool
    def __init__(self, worker_id: _Optional[str] = ..., task_names: _Optional[_Iterable[str]] = ..., connected: _Optional[bool] = ...) -> None: ...

class RegisteredResponse(_message.Message):
    __slots__ = ("workers",)
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[WorkerTaskNames]
    def __init__(self, workers: _Optional[_Iterable[_Union[WorkerTaskNames, _Mapping]]] = ...) -> None: ...

class RateLimitsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RateLimitsResponse(_message.Message):
    __slots__ = ("keys", "limits")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[KeyRate]
    limits: _containers.RepeatedCompositeFieldContainer[RateLimitRule]
    def __init__(self, keys: _Optional[_Iterable[_Union[KeyRate, _Mapping]]] = ..., limits: _Optional[_Iterable[_Union[RateLimitRule, _Mapping]]] = ...) -> None: ...

class RateLimitRule(_message.Message):
    __slots__ = ("pattern", "per_second", "set_through_api", "set_at", "set_by")
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    SET_THROUGH_API_FIELD_NUMBER: _ClassVar[int]
    SET_AT_FIELD_NUMBER: _ClassVar[int]
    SET_BY_FIELD_NUMBER: _ClassVar[int]
    pattern: str
    per_second: float
    set_through_api: bool
    set_at: _timestamp_pb2.Timestamp
    set_by: str
    def __init__(self, pattern: _Optional[str] = ..., per_second: _Optional[float] = ..., set_through_api: _Optional[bool] = ..., set_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., set_by: _Optional[str] = ...) -> None: ...

class KeyRate(_message.Message):
    __slots__ = ("key", "configured_per_second", "effective_per_second", "tokens", "slowed_at")
    KEY_FIELD_NUMBER: _ClassVar[int]
    CONFIGURED_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    SLOWED_AT_FIELD_NUMBER: _ClassVar[int]
    key: str
    configured_per_second: float
    effective_per_second: float
    tokens: float
    slowed_at: _timestamp_pb2.Timestamp
    def __init__(self, key: _Optional[str] = ..., configured_per_second: _Optional[float] = ..., effective_per_second: _Optional[float] = ..., tokens: _Optional[float] = ..., slowed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class QueuesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class QueueDepth(_message.Message):
    __slots__ = ("name", "priority", "tasks_by_state", "oldest_pending_age", "consumers", "unserved", "paused_at")
    class TasksByStateEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class UnservedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    TASKS_BY_STATE_FIELD_NUMBER: _ClassVar[int]
    OLDEST_PENDING_AGE_FIELD_NUMBER: _ClassVar[int]
    CONSUMERS_FIELD_NUMBER: _ClassVar[int]
    UNSERVED_FIELD_NUMBER: _ClassVar[int]
    PAUSED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    priority: int
    tasks_by_state: _containers.ScalarMap[str, int]
    oldest_pending_age: _duration_pb2.Duration
    consumers: int
    unserved: _containers.ScalarMap[str, int]
    paused_at: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., priority: _Optional[int] = ..., tasks_by_state: _Optional[_Mapping[str, int]] = ..., oldest_pending_age: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., consumers: _Optional[int] = ..., unserved: _Optional[_Mapping[str, int]] = ..., paused_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class QueuesResponse(_message.Message):
    __slots__ = ("queues",)
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    queues: _containers.RepeatedCompositeFieldContainer[QueueDepth]
    def __init__(self, queues: _Optional[_Iterable[_Union[QueueDepth, _Mapping]]] = ...) -> None: ...

class CloseIdleConnectionsRequest(_message.Message):
    __slots__ = ("queue", "timeout")
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    queue: str
    timeout: _duration_pb2.Duration
    def __init__(self, queue: _Optional[str] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class CloseIdleConnectionsResponse(_message.Message):
    __slots__ = ("workers",)
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[WorkerPing]
    def __init__(self, workers: _Optional[_Iterable[_Union[WorkerPing, _Mapping]]] = ...) -> None: ...
