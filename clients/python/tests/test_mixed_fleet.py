"""Python and Rust workers on the same queue: the coordinator leases each task only to a
worker that registered its name, so every task runs on a worker that has it and none fails
``unregistered``. ``celeritas dev``'s own Rust worker consumes every queue."""

from __future__ import annotations

from pathlib import Path

from worker_support import PythonWorker

import celeritas
from celeritas import TaskSpec, TaskState
from celeritas.testing import DevServer


def test_python_tasks_and_rust_builtins_share_a_queue(server: DevServer, tmp_path: Path) -> None:
    with celeritas.Client(server.url) as client, PythonWorker(server.url, tmp_path, name="py-fleet"):
        specs = []
        for number in range(40):
            specs.append(TaskSpec(name="t.add", args={"x": number, "y": 0}, queue="default"))
            specs.append(TaskSpec(name="noop", args={"number": number}, queue="default"))
        submitted = client.submit_many(specs)

        tasks = [client.wait(entry.task_id, timeout=60) for entry in submitted]

    for spec, task in zip(specs, tasks, strict=True):
        assert task.state is TaskState.SUCCEEDED, (spec.name, task.error)
        assert task.failures == [], task.failures
        if spec.name == "t.add":
            assert task.worker_id == "py-fleet"
            assert task.result == spec.args["x"]
        else:
            assert task.worker_id != "py-fleet"
            assert task.result == spec.args


def test_a_python_parent_with_rust_children_and_a_python_callback(server: DevServer, tmp_path: Path) -> None:
    with celeritas.Client(server.url) as client, PythonWorker(server.url, tmp_path, name="py-parent"):
        parent = client.submit("t.fan_out_to_noops", {"count": 5}, queue="default")

        assert client.result(parent.task_id, timeout=60, tree=True) == {"children": 5}
        tree = client.list_tasks(
            root_id=parent.task_id,
            states=[state for state in TaskState if state.is_finished],
            include_payloads=True,
        )

    by_name: dict[str, list[celeritas.Task]] = {}
    for task in tree:
        by_name.setdefault(task.name, []).append(task)
    assert len(by_name["noop"]) == 5
    assert all(
        task.state is TaskState.SUCCEEDED and task.worker_id != "py-parent" for task in by_name["noop"]
    )
    [callback] = by_name["t.collect"]
    assert callback.state is TaskState.SUCCEEDED and callback.worker_id == "py-parent"
    assert callback.result == {"parent": parent.task_id, "callback_of": parent.task_id}
