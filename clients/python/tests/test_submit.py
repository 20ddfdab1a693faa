"""Submitting, reading, waiting for, cancelling and purging tasks with the blocking client."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import grpc
import pytest

import celeritas
from celeritas import TaskSpec, TaskState


def test_submit_returns_an_id_and_the_task_runs_to_its_result(client: celeritas.Client) -> None:
    submitted = client.submit("noop", {"campaign_id": "c-42", "batch": [1, 2]})
    assert submitted.created

    task = client.wait(submitted.task_id, timeout=20)

    assert task.state is TaskState.SUCCEEDED
    assert task.is_finished and task.is_root
    assert task.id == task.root_id == submitted.task_id
    assert task.name == "noop"
    assert task.queue == "default"
    assert task.args == {"campaign_id": "c-42", "batch": [1, 2]}
    assert task.result == {"campaign_id": "c-42", "batch": [1, 2]}
    assert task.error is None and task.failures == []
    assert task.attempt == 1
    assert task.worker_id
    assert task.created_at is not None and task.created_at.tzinfo is timezone.utc
    assert task.started_at is not None and task.finished_at is not None
    assert task.created_at <= task.started_at <= task.finished_at


def test_submit_without_a_key_generates_one_so_retries_are_safe(client: celeritas.Client) -> None:
    first = client.submit("noop")
    second = client.submit("noop")

    first_key = client.get(first.task_id).idempotency_key
    assert first_key, "the client gave the submission an idempotency key"
    assert first_key != client.get(second.task_id).idempotency_key


def test_a_repeated_idempotency_key_returns_the_first_task(client: celeritas.Client) -> None:
    key = f"invoice-{time.monotonic_ns()}"
    first = client.submit("noop", {"n": 1}, idempotency_key=key)
    again = client.submit("noop", {"n": 2}, idempotency_key=key)

    assert first.created and not again.created
    assert again.task_id == first.task_id
    assert client.get(first.task_id).idempotency_key == key


def test_submit_options_reach_the_task(client: celeritas.Client) -> None:
    before = datetime.now(timezone.utc)
    submitted = client.submit(
        "noop",
        queue="email",
        priority=7,
        countdown=timedelta(minutes=10),
        expires=3600,
        max_retries=9,
    )

    task = client.get(submitted.task_id)

    assert task.state is TaskState.SCHEDULED
    assert task.queue == "email" and task.priority == 7 and task.max_retries == 9
    assert task.run_at is not None and task.run_at >= before + timedelta(minutes=9)
    assert task.expires_at is not None and task.expires_at >= before + timedelta(minutes=59)
    client.cancel(task.id)


def test_eta_and_expires_take_aware_datetimes(client: celeritas.Client) -> None:
    eta = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=2)
    submitted = client.submit("noop", eta=eta, expires=eta + timedelta(hours=1))

    task = client.get(submitted.task_id)

    assert task.state is TaskState.SCHEDULED
    assert task.run_at == eta
    assert task.expires_at == eta + timedelta(hours=1)
    client.cancel(task.id)


def test_a_naive_eta_is_refused_before_anything_is_sent(client: celeritas.Client) -> None:
    with pytest.raises(ValueError, match=r"^task\.eta: a naive datetime"):
        client.submit("noop", eta=datetime.now() + timedelta(hours=1))


def test_arguments_that_are_not_json_are_refused(client: celeritas.Client) -> None:
    with pytest.raises(TypeError, match=r"^task\.args: not JSON-serializable"):
        client.submit("noop", {"when": object()})


def test_the_hard_time_limit_aborts_a_long_task(client: celeritas.Client) -> None:
    submitted = client.submit(
        "sleep", {"ms": 20_000, "ignore_stop": True}, soft_time_limit=0.2, hard_time_limit=0.5
    )

    with pytest.raises(celeritas.TaskFailed) as failure:
        client.result(submitted.task_id, timeout=20)

    assert failure.value.state is TaskState.FAILED
    assert failure.value.error is not None and failure.value.error.kind == "time_limit"


def test_a_retried_failure_is_kept_in_the_task(client: celeritas.Client) -> None:
    submitted = client.submit("fail", {"times": 1, "kind": "flaky", "retry_after_ms": 10})

    task = client.wait(submitted.task_id, timeout=30)

    assert task.state is TaskState.SUCCEEDED
    assert task.retries == 1 and task.attempt == 2
    assert [(failure.attempt, failure.kind) for failure in task.failures] == [(1, "flaky")]
    assert task.failures[0].at is not None and task.failures[0].worker_id


def test_result_raises_task_failed_with_the_error(client: celeritas.Client) -> None:
    submitted = client.submit(
        "fail", {"retryable": False, "kind": "smtp_permanent", "message": "mailbox unknown"}
    )

    with pytest.raises(celeritas.TaskFailed) as failure:
        client.result(submitted.task_id, timeout=20)

    assert failure.value.task.id == submitted.task_id
    assert failure.value.error == celeritas.TaskError("smtp_permanent", "mailbox unknown")
    assert "smtp_permanent: mailbox unknown" in str(failure.value)


def test_get_with_wait_long_polls_until_the_task_finishes(client: celeritas.Client) -> None:
    submitted = client.submit("sleep", {"ms": 300})

    started = time.monotonic()
    task = client.get(submitted.task_id, wait=20)

    assert task.state is TaskState.SUCCEEDED
    assert time.monotonic() - started < 10, "the answer came when the task finished"


def test_get_with_wait_answers_with_an_unfinished_task_when_the_wait_runs_out(
    client: celeritas.Client,
) -> None:
    submitted = client.submit("noop", countdown=600)

    started = time.monotonic()
    task = client.get(submitted.task_id, wait=timedelta(milliseconds=500))

    assert task.state is TaskState.SCHEDULED
    assert time.monotonic() - started >= 0.4
    client.cancel(task.id)


def test_wait_raises_task_timeout_for_a_task_still_waiting(client: celeritas.Client) -> None:
    submitted = client.submit("noop", countdown=600)

    with pytest.raises(celeritas.TaskTimeout) as timeout:
        client.wait(submitted.task_id, timeout=0.3)

    assert timeout.value.task.state is TaskState.SCHEDULED
    client.cancel(submitted.task_id)


def test_submit_many_submits_every_spec_in_order(client: celeritas.Client) -> None:
    specs = [TaskSpec("noop", {"index": index}, queue="email") for index in range(3)]

    submitted = client.submit_many(specs)

    assert [entry.created for entry in submitted] == [True, True, True]
    results = [client.result(entry.task_id, timeout=20) for entry in submitted]
    assert results == [{"index": 0}, {"index": 1}, {"index": 2}]


def test_submit_many_names_the_bad_spec_and_accepts_none(client: celeritas.Client) -> None:
    key = f"batch-{time.monotonic_ns()}"
    specs = [TaskSpec("noop", idempotency_key=key), TaskSpec("noop", queue="mail")]

    with pytest.raises(celeritas.InvalidArgument) as refused:
        client.submit_many(specs)

    assert refused.value.field == "tasks[1].queue"
    # The valid spec was not accepted either: its key is still free.
    assert client.submit("noop", idempotency_key=key).created


def test_cancel_stops_a_pending_task_from_ever_starting(client: celeritas.Client) -> None:
    submitted = client.submit("noop", countdown=600)

    cancelled = client.cancel(submitted.task_id)

    assert cancelled.state is TaskState.CANCELLED
    assert client.get(submitted.task_id).state is TaskState.CANCELLED
    with pytest.raises(celeritas.TaskFailed) as failure:
        client.result(submitted.task_id, timeout=5)
    assert failure.value.state is TaskState.CANCELLED


def test_cancel_tells_a_running_task_to_stop(client: celeritas.Client) -> None:
    submitted = client.submit("sleep", {"ms": 60_000})
    events = client.stream_progress(submitted.task_id)
    first = next(events)
    assert first.state_changed is not None and first.state_changed.state is TaskState.RUNNING

    client.cancel(submitted.task_id, terminate=True)

    remaining = list(events)
    assert remaining[-1].tree_finished is not None
    assert remaining[-1].tree_finished.root_state is TaskState.CANCELLED
    assert client.get(submitted.task_id).state is TaskState.CANCELLED


def test_purge_cancels_the_waiting_tasks_of_a_queue(client: celeritas.Client) -> None:
    waiting = [client.submit("noop", queue="import", countdown=600) for _ in range(3)]

    cancelled = client.purge("import")

    assert cancelled >= 3
    assert {client.get(entry.task_id).state for entry in waiting} == {TaskState.CANCELLED}


def test_errors_carry_the_status_code_and_the_message(client: celeritas.Client) -> None:
    with pytest.raises(celeritas.InvalidArgument) as unknown_queue:
        client.submit("noop", queue="mail")
    assert unknown_queue.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert unknown_queue.value.message.startswith('task.queue: unknown queue "mail"')
    assert unknown_queue.value.field == "task.queue"
    assert isinstance(unknown_queue.value, celeritas.CeleritasError)

    with pytest.raises(celeritas.NotFound) as missing:
        client.get("00000000-0000-0000-0000-000000000000")
    assert missing.value.code is grpc.StatusCode.NOT_FOUND
    assert missing.value.field == "task_id"

    with pytest.raises(celeritas.InvalidArgument, match="is not a task id"):
        client.cancel("not-a-uuid")

    with pytest.raises(celeritas.InvalidArgument) as both:
        client.submit("noop", countdown=5, eta=datetime.now(timezone.utc))
    assert both.value.field is not None and both.value.field.startswith("task.")


def test_a_token_travels_without_disturbing_calls(server) -> None:  # type: ignore[no-untyped-def]
    # Today's server ignores the token; this shows that sending it is harmless.
    with celeritas.Client(server.url, token="s3cret") as client:
        assert client.result(client.submit("noop", {"ok": True}).task_id, timeout=20) == {"ok": True}


def test_health_reports_serving(client: celeritas.Client) -> None:
    assert client.health() is celeritas.HealthStatus.SERVING
    with pytest.raises(celeritas.NotFound):
        client.health("no.such.Service")


def test_a_task_handle_answers_like_celerys_async_result(client: celeritas.Client) -> None:
    submitted = client.submit("sleep", {"ms": 200})
    handle = celeritas.TaskHandle(client, submitted.task_id)

    result = handle.get(timeout=20)
    assert result["interrupted"] is False and result["slept_ms"] >= 200
    assert handle.status() is TaskState.SUCCEEDED
    assert handle.ready()
    assert [event.kind for event in handle.progress()][-1] == "tree_finished"
