"""Following a task tree's events and listing its records with the blocking client."""

from __future__ import annotations

import pytest

import celeritas
from celeritas import TaskState


def assert_numbered_once_from(events: list[celeritas.Event], first_sequence: int) -> None:
    sequences = [event.sequence for event in events]
    assert sequences == list(range(first_sequence, first_sequence + len(events))), sequences


def test_a_task_without_children_streams_its_states_and_the_end(client: celeritas.Client) -> None:
    submitted = client.submit("noop", {"x": 1})

    events = list(client.stream_progress(submitted.task_id))

    assert_numbered_once_from(events, 1)
    assert [event.kind for event in events] == ["state_changed", "state_changed", "tree_finished"]
    assert [event.state_changed.state for event in events[:2]] == [  # type: ignore[union-attr]
        TaskState.RUNNING,
        TaskState.SUCCEEDED,
    ]
    last = events[-1]
    assert last.is_last and last.tree_finished == celeritas.TreeFinished(TaskState.SUCCEEDED)
    assert last.root_id == submitted.task_id
    assert last.at is not None
    assert last.aggregate.tasks_total == 1 and last.aggregate.tasks_finished == 1
    assert last.aggregate.tasks_by_state == {"succeeded": 1}


def test_a_fan_out_streams_the_whole_tree_to_its_end(client: celeritas.Client) -> None:
    submitted = client.submit(
        "fan_out", {"task": "sleep", "args": [{"ms": 50}] * 6, "callback": {"task": "noop"}}
    )

    events = list(client.stream_progress(submitted.task_id))

    assert_numbered_once_from(events, 1)
    assert sum(event.is_last for event in events) == 1 and events[-1].is_last
    last = events[-1].aggregate
    assert last.tasks_total == 8, "the root, six children and the callback"
    assert last.tasks_finished == 8
    assert last.tasks_by_state == {"succeeded": 8}
    assert any(event.kind == "tree_updated" for event in events)
    # The root reports 6/6 once it has submitted its children; sleep children report nothing.
    assert (last.progress.done, last.progress.total) == (6, 6)


def test_a_failed_root_reports_its_error_in_the_stream(client: celeritas.Client) -> None:
    submitted = client.submit("fail", {"retryable": False, "kind": "bounce", "message": "no"})

    events = list(client.stream_progress(submitted.task_id))

    failed = [
        event.state_changed
        for event in events
        if event.state_changed and event.state_changed.state is TaskState.FAILED
    ]
    assert failed and failed[0].error == celeritas.TaskError("bounce", "no")
    assert events[-1].tree_finished == celeritas.TreeFinished(TaskState.FAILED)


def test_streaming_from_a_sequence_resumes_after_it(client: celeritas.Client) -> None:
    submitted = client.submit("fan_out", {"task": "noop", "count": 4})
    everything = list(client.stream_progress(submitted.task_id))
    assert len(everything) >= 3

    resumed = list(client.stream_progress(submitted.task_id, from_sequence=1))

    assert resumed == everything[1:]


def test_stopping_early_ends_the_stream_cleanly(client: celeritas.Client) -> None:
    submitted = client.submit("sleep", {"ms": 60_000})
    events = client.stream_progress(submitted.task_id)

    first = next(events)
    events.close()  # what leaving a for loop early does

    assert first.sequence == 1
    client.cancel(submitted.task_id, terminate=True)


def test_a_child_task_cannot_be_streamed_and_the_error_names_its_root(
    client: celeritas.Client,
) -> None:
    # The child is found through the record it emits.
    root = client.submit("fan_out", {"task": "emit_records", "args": [{"count": 1}]})
    list(client.stream_progress(root.task_id))
    child = next(client.list_records(root.task_id, whole_tree=True)).task_id

    with pytest.raises(celeritas.FailedPrecondition) as refused:
        list(client.stream_progress(child))

    assert root.task_id in refused.value.message
    assert client.get(child).root_id == root.task_id


def test_a_sequence_past_the_end_is_refused(client: celeritas.Client) -> None:
    submitted = client.submit("noop")
    list(client.stream_progress(submitted.task_id))

    with pytest.raises(celeritas.InvalidArgument) as refused:
        list(client.stream_progress(submitted.task_id, from_sequence=100))

    assert refused.value.field == "from_sequence"


def test_list_records_pages_through_a_whole_tree(client: celeritas.Client) -> None:
    # Three children, each emitting records of its own kind (keys are unique per root and kind).
    batches = [
        {"count": 5, "kind": "delivery", "status": "delivered"},
        {"count": 4, "kind": "bounce", "status": "failed"},
        {"count": 3, "kind": "contact", "status": "valid"},
    ]
    submitted = client.submit("fan_out", {"task": "emit_records", "args": batches})
    events = list(client.stream_progress(submitted.task_id))
    assert events[-1].aggregate.records_by_status == {"delivered": 5, "failed": 4, "valid": 3}

    records = list(client.list_records(submitted.task_id, whole_tree=True, page_size=5))

    assert len(records) == 12
    assert len({(record.kind, record.key) for record in records}) == 12
    assert {record.root_id for record in records} == {submitted.task_id}
    deliveries = [record for record in records if record.kind == "delivery"]
    assert [record.key for record in deliveries] == [f"delivery-{index}" for index in range(5)]
    assert deliveries[0].data == {"index": 0}
    assert deliveries[0].created_at is not None and deliveries[0].updated_at is not None

    only_failed = list(client.list_records(submitted.task_id, whole_tree=True, status="failed"))
    assert [record.key for record in only_failed] == [f"bounce-{index}" for index in range(4)]
    only_contacts = list(client.list_records(submitted.task_id, whole_tree=True, kind="contact"))
    assert len(only_contacts) == 3

    child = only_contacts[0].task_id
    assert [record.key for record in client.list_records(child)] == [
        "contact-0",
        "contact-1",
        "contact-2",
    ]
    with pytest.raises(celeritas.FailedPrecondition):
        list(client.list_records(child, whole_tree=True))


# Waiting for a whole tree: a root that fans out finishes as soon as it has submitted its
# children, so waiting for the root is not waiting for the work.


def test_get_waits_for_the_root_alone_and_tree_true_times_out_while_children_run(
    client: celeritas.Client,
) -> None:
    submitted = client.submit("fan_out", {"task": "sleep", "args": [{"ms": 60_000}] * 2})
    handle = celeritas.TaskHandle(client, submitted.task_id)
    try:
        assert handle.get(timeout=20)["children"] == 2
        assert len(client.list_tasks(root_id=submitted.task_id)) == 2, "the children still run"

        with pytest.raises(celeritas.TaskTimeout) as timed_out:
            handle.get(timeout=0.5, tree=True)

        assert timed_out.value.tree and timed_out.value.timeout == 0.5
        assert timed_out.value.task.id == submitted.task_id
        assert timed_out.value.task.state is TaskState.SUCCEEDED
        assert "tree" in str(timed_out.value)
    finally:
        handle.cancel(terminate=True)


def test_get_with_tree_returns_once_every_child_and_the_callback_finished(
    client: celeritas.Client,
) -> None:
    submitted = client.submit(
        "fan_out",
        {"task": "sleep", "args": [{"ms": 300}] * 3, "callback": {"task": "noop", "args": {"n": 1}}},
    )
    handle = celeritas.TaskHandle(client, submitted.task_id)

    result = handle.get(timeout=30, tree=True)

    assert result["children"] == 3
    assert client.list_tasks(root_id=submitted.task_id) == [], "nothing of the tree is unfinished"
    tree = client.list_tasks(root_id=submitted.task_id, states=[TaskState.SUCCEEDED])
    assert sorted(task.name for task in tree) == ["fan_out", "noop", "sleep", "sleep", "sleep"]
    assert client.wait(submitted.task_id, timeout=5, tree=True).state is TaskState.SUCCEEDED


def test_waiting_for_the_tree_of_a_child_names_its_root(client: celeritas.Client) -> None:
    submitted = client.submit("fan_out", {"task": "noop", "count": 1})
    client.wait(submitted.task_id, timeout=20, tree=True)
    (child,) = client.list_tasks(root_id=submitted.task_id, names=["noop"], states=[TaskState.SUCCEEDED])

    with pytest.raises(celeritas.FailedPrecondition) as refused:
        client.result(child.id, timeout=5, tree=True)

    assert submitted.task_id in refused.value.message
