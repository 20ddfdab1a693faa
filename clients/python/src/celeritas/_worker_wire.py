"""Conversions between the worker protocol's generated messages and ``celeritas.protocol``.

With ``_wire.py`` (the client's calls), this is the only code that touches protobuf messages:
the worker runtime builds what it says and reads what the coordinator says here.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from google.protobuf import duration_pb2, timestamp_pb2

from celeritas import _wire
from celeritas import protocol as p
from celeritas.v1 import workers_pb2


def _token_pb(token: p.LeaseToken) -> workers_pb2.LeaseToken:
    return workers_pb2.LeaseToken(task_id=token.task_id, attempt=token.attempt)


def _token(message: workers_pb2.LeaseToken) -> p.LeaseToken:
    return p.LeaseToken(task_id=message.task_id, attempt=message.attempt)


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment.astimezone(timezone.utc))
    return stamp


def _duration(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromTimedelta(timedelta(seconds=seconds))
    return duration


def _seconds(parent: object, field_name: str) -> float | None:
    value = _wire.timedelta_of(parent, field_name)
    return None if value is None else value.total_seconds()


def request(message: p.WorkerMessage) -> workers_pb2.ConnectRequest:
    """One message of the worker's half of the stream."""
    if isinstance(message, p.Hello):
        return workers_pb2.ConnectRequest(
            hello=workers_pb2.Hello(
                worker_id=message.worker_id,
                hostname=message.hostname,
                pid=message.pid,
                queues=message.queues,
                concurrency=message.concurrency,
                prefetch_multiplier=message.prefetch_multiplier,
                task_names=message.task_names,
                version=message.version,
                held_leases=[_token_pb(token) for token in message.held_leases],
                # The runtime reads CoordinatorBatch (coordinator_messages opens them).
                accepts_batches=True,
            )
        )
    if isinstance(message, p.Credit):
        return workers_pb2.ConnectRequest(credit=workers_pb2.Credit(grant=message.grant))
    if isinstance(message, p.Started):
        return workers_pb2.ConnectRequest(
            started=workers_pb2.TaskStarted(lease=_token_pb(message.token), started_at=_timestamp(message.at))
        )
    if isinstance(message, p.ProgressReport):
        return workers_pb2.ConnectRequest(
            progress=workers_pb2.TaskProgress(
                lease=_token_pb(message.token),
                done=max(0, message.done),
                total=max(0, message.total),
                message=p.cut(message.message, p.MAX_NOTE_BYTES),
            )
        )
    if isinstance(message, p.Result):
        result = workers_pb2.TaskResult(lease=_token_pb(message.token))
        if isinstance(message.outcome, p.Success):
            result.success.CopyFrom(workers_pb2.TaskSuccess(result_json=message.outcome.result_json))
        else:
            failure = workers_pb2.TaskFailure(
                kind=message.outcome.kind,
                message=message.outcome.message,
                retryable=message.outcome.retryable,
            )
            if message.outcome.retry_after is not None:
                failure.retry_after.CopyFrom(_duration(max(0.0, message.outcome.retry_after)))
            result.failure.CopyFrom(failure)
        return workers_pb2.ConnectRequest(result=result)
    if isinstance(message, p.Heartbeat):
        stats = message.stats
        return workers_pb2.ConnectRequest(
            heartbeat=workers_pb2.Heartbeat(
                stats=workers_pb2.WorkerStats(
                    processed=stats.processed,
                    failed=stats.failed,
                    memory_rss_bytes=stats.memory_rss_bytes,
                    started_at=_timestamp(stats.started_at),
                )
            )
        )
    if isinstance(message, p.Release):
        return workers_pb2.ConnectRequest(
            release=workers_pb2.ReleaseLeases(leases=[_token_pb(token) for token in message.tokens])
        )
    if isinstance(message, p.ControlReply):
        return workers_pb2.ConnectRequest(
            control_reply=workers_pb2.ControlReply(
                request_id=message.request_id, detail=p.cut(message.detail, p.MAX_NOTE_BYTES)
            )
        )
    if isinstance(message, p.SubmitChildren):
        submit = workers_pb2.SubmitChildren(
            request_id=message.request_id,
            lease=_token_pb(message.token),
            children=[
                _wire.task_spec_pb(child, f"children[{index}]")
                for index, child in enumerate(message.children)
            ],
        )
        if message.callback is not None:
            submit.callback.CopyFrom(_wire.task_spec_pb(message.callback, "callback"))
        return workers_pb2.ConnectRequest(submit_children=submit)
    if isinstance(message, p.EmitRecords):
        return workers_pb2.ConnectRequest(
            emit_records=workers_pb2.EmitRecords(
                lease=_token_pb(message.token),
                records=[
                    workers_pb2.RecordEntry(
                        kind=entry.kind, key=entry.key, status=entry.status, data_json=entry.data_json
                    )
                    for entry in message.records
                ],
            )
        )
    if isinstance(message, p.QueryRecords):
        return workers_pb2.ConnectRequest(
            query_records=workers_pb2.QueryRecords(
                request_id=message.request_id,
                lease=_token_pb(message.token),
                kind=message.kind,
                status=message.status or "",
            )
        )
    raise TypeError(f"not a worker message: {message!r}")


_CONTROL_COMMANDS = {"ping": "ping", "drain": "drain", "close_idle_connections": "close_idle_connections"}


#: The most messages, and about the most bytes, one WorkerBatch carries (the contract allows
#: 1,000 messages; the coordinator's message size limit is far above the bytes).
BATCH_MESSAGES = 1000
BATCH_BYTES = 1024 * 1024


def batched(messages: list[workers_pb2.ConnectRequest]) -> workers_pb2.ConnectRequest:
    """Messages to send together, as one: the message itself when there is one, a
    ``WorkerBatch`` (read by the coordinator one by one, in order) when there are more."""
    if len(messages) == 1:
        return messages[0]
    return workers_pb2.ConnectRequest(batch=workers_pb2.WorkerBatch(messages=messages))


def coordinator_messages(message: workers_pb2.ConnectResponse) -> list[p.CoordinatorMessage]:
    """The coordinator's messages in one wire message (several in a ``CoordinatorBatch``), in
    order; None for a kind this worker does not know."""
    if message.WhichOneof("message") == "batch":
        return [coordinator_message(inner) for inner in message.batch.messages]
    return [coordinator_message(message)]


def coordinator_message(message: workers_pb2.ConnectResponse) -> p.CoordinatorMessage:
    """One message of the coordinator's half; None for a kind this worker does not know."""
    which = message.WhichOneof("message")
    if which == "welcome":
        welcome = message.welcome
        return p.Welcome(
            coordinator_id=welcome.coordinator_id,
            heartbeat_interval=_seconds(welcome, "heartbeat_interval") or 5.0,
            kept_leases=[_token(token) for token in welcome.kept_leases],
        )
    if which == "lease":
        lease = message.lease
        return p.Lease(
            token=_token(lease.token),
            name=lease.name,
            args_json=lease.args_json,
            queue=lease.queue,
            retries=lease.retries,
            max_retries=lease.max_retries,
            soft_time_limit=_seconds(lease, "soft_time_limit"),
            hard_time_limit=_seconds(lease, "hard_time_limit"),
            expires_at=_wire.datetime_of(lease, "expires_at"),
            parent_id=lease.parent_id or None,
            root_id=lease.root_id,
            priority=lease.priority,
            run_at=_wire.datetime_of(lease, "run_at"),
        )
    if which == "cancel":
        cancel = message.cancel
        return p.Cancel(token=_token(cancel.lease), terminate=cancel.terminate, reason=cancel.reason)
    if which == "control":
        control = message.control
        command = control.WhichOneof("command")
        return p.Control(
            request_id=control.request_id,
            command=_CONTROL_COMMANDS.get(command or "", "unsupported"),
        )
    if which == "result_ack":
        ack = message.result_ack
        return p.ResultAck(token=_token(ack.lease), accepted=ack.accepted, reason=ack.reason)
    if which == "children_submitted":
        answer = message.children_submitted
        return p.ChildrenSubmitted(
            request_id=answer.request_id,
            task_ids=list(answer.task_ids),
            callback_id=answer.callback_id or None,
            error=answer.error or None,
            retryable=answer.retryable,
        )
    if which == "records_queried":
        queried = message.records_queried
        return p.RecordsQueried(
            request_id=queried.request_id,
            keys=list(queried.keys),
            error=queried.error or None,
            retryable=queried.retryable,
        )
    return None
