"""The Python client of celeritas, a task-execution platform.

>>> import celeritas
>>> client = celeritas.Client("http://127.0.0.1:50051")
>>> task_id = client.submit("noop", {"hello": "world"}).task_id
>>> client.result(task_id, timeout=10)
{'hello': 'world'}

``Client`` blocks; ``AsyncClient`` (``celeritas.aio``) is its asyncio twin. Results are the
plain dataclasses of ``celeritas.models``; failed calls raise the exceptions of
``celeritas.errors``. ``celeritas.django`` integrates with Django, and ``celeritas.v1`` holds
the generated gRPC code the client is built on.

Python tasks are declared on an app, as in Celery, and run by ``celeritas.worker``:

>>> app = celeritas.Celeritas("proj")
>>> @app.task(queue="default")
... def add(x: int, y: int) -> int:
...     return x + y
>>> add.delay(x=1, y=2).get(timeout=10)
3
"""

from celeritas._version import __version__
from celeritas.aio import AsyncClient, AsyncInspect
from celeritas.app import Celeritas, DuplicateTaskName, EagerResult, EagerTaskFailed, shared_task
from celeritas.client import Client, Inspect
from celeritas.context import (
    AsyncTaskContext,
    ContextRequestFailed,
    TaskContext,
    TaskRequest,
    current_task,
)
from celeritas.errors import (
    AlreadyExists,
    Cancelled,
    CeleritasError,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    TaskFailed,
    TaskTimeout,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from celeritas.execution import (
    PermanentError,
    Retry,
    SoftTimeLimitExceeded,
    StopRequested,
    TaskCancelled,
)
from celeritas.handle import TaskHandle
from celeritas.models import (
    Aggregate,
    AttemptFailure,
    BulkResult,
    Event,
    HealthStatus,
    KeyRate,
    Progress,
    ProgressUpdated,
    QueueDepth,
    QueueRef,
    RateLimitRule,
    RateLimits,
    RateLimitSet,
    Record,
    Schedule,
    ScheduledWork,
    StateChanged,
    StoredFile,
    SubmittedTask,
    Task,
    TaskError,
    TaskSpec,
    TaskState,
    TreeFinished,
    TreePause,
    TreeUpdated,
    WorkerPing,
    WorkerQueues,
    WorkerStats,
    WorkerTaskNames,
    WorkerTasks,
)
from celeritas.retry import NO_RETRIES, RetryPolicy

__all__ = [
    "NO_RETRIES",
    "Aggregate",
    "AlreadyExists",
    "AsyncClient",
    "AsyncInspect",
    "AsyncTaskContext",
    "AttemptFailure",
    "BulkResult",
    "Cancelled",
    "Celeritas",
    "CeleritasError",
    "Client",
    "ContextRequestFailed",
    "DeadlineExceeded",
    "DuplicateTaskName",
    "EagerResult",
    "EagerTaskFailed",
    "Event",
    "FailedPrecondition",
    "HealthStatus",
    "Inspect",
    "Internal",
    "InvalidArgument",
    "KeyRate",
    "NotFound",
    "PermanentError",
    "PermissionDenied",
    "Progress",
    "ProgressUpdated",
    "QueueDepth",
    "QueueRef",
    "RateLimitRule",
    "RateLimitSet",
    "RateLimits",
    "Record",
    "ResourceExhausted",
    "Retry",
    "RetryPolicy",
    "Schedule",
    "ScheduledWork",
    "SoftTimeLimitExceeded",
    "StateChanged",
    "StopRequested",
    "StoredFile",
    "SubmittedTask",
    "Task",
    "TaskCancelled",
    "TaskContext",
    "TaskError",
    "TaskFailed",
    "TaskHandle",
    "TaskRequest",
    "TaskSpec",
    "TaskState",
    "TaskTimeout",
    "TreeFinished",
    "TreePause",
    "TreeUpdated",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "WorkerPing",
    "WorkerQueues",
    "WorkerStats",
    "WorkerTaskNames",
    "WorkerTasks",
    "__version__",
    "current_task",
    "shared_task",
]
