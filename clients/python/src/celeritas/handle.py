"""A handle on one submitted task, in the manner of Celery's ``AsyncResult``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from celeritas.models import Event, Record, Seconds, Task, TaskState

if TYPE_CHECKING:
    from celeritas.client import Client

__all__ = ["TaskHandle"]


class TaskHandle:
    """A submitted task: its id, plus the questions one asks about it.

    Returned by ``celeritas.django`` tasks' ``delay()``; make one for any id with
    ``TaskHandle(client, task_id)``. It holds no state but the id, so it is cheap to create and
    safe to rebuild from an id stored elsewhere (a database row, a session).
    """

    def __init__(self, client: Client, task_id: str, *, created: bool = True) -> None:
        self.client = client
        #: The task's id.
        self.id = task_id
        #: False when the submission's idempotency key matched an existing task.
        self.created = created

    def __repr__(self) -> str:
        return f"<TaskHandle {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskHandle) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def task(self) -> Task:
        """The task as the coordinator knows it now."""
        return self.client.get(self.id)

    def status(self) -> TaskState:
        """The task's current state."""
        return self.task().state

    def ready(self) -> bool:
        """True once the task has finished, successfully or not."""
        return self.task().is_finished

    def get(self, timeout: Seconds | None = None, *, tree: bool = False) -> Any:
        """Waits for the task and returns its result (decoded JSON).

        Raises :class:`celeritas.TaskFailed` when the task failed, was cancelled or expired, and
        :class:`celeritas.TaskTimeout` when it has not finished within ``timeout`` seconds
        (None waits as long as it takes).

        The task itself is waited for: a campaign (or any task that fans out) finishes as soon
        as it has submitted its batches. ``tree=True`` waits until its whole tree has finished,
        every batch and callback included (the handle must be a root's); the result is still
        the root's. See :meth:`celeritas.Client.wait`.
        """
        return self.client.result(self.id, timeout, tree=tree)

    def progress(self, from_sequence: int | None = None) -> Iterator[Event]:
        """The events of the task's tree until it finishes; resumes across reconnections (see
        :meth:`celeritas.Client.stream_progress`). The task must be a root."""
        return self.client.stream_progress(self.id, from_sequence)

    def records(
        self, whole_tree: bool = False, kind: str | None = None, status: str | None = None
    ) -> Iterator[Record]:
        """The records the task (or with ``whole_tree`` its tree) emitted, oldest first."""
        return self.client.list_records(self.id, whole_tree, kind, status)

    def cancel(self, terminate: bool = False) -> Task:
        """Cancels the task (and its unfinished descendants); see
        :meth:`celeritas.Client.cancel`."""
        return self.client.cancel(self.id, terminate)
