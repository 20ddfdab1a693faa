"""Rate keys: a configured `[rate_limits]` pattern spaces out the leases of the tasks that carry
a matching key, and leaves the others alone."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

import celeritas
from celeritas import TaskState
from celeritas.testing import DevServer

LIMITED = "customer:slow"


@pytest.fixture(scope="module")
def limited_client(
    celeritas_binary: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[celeritas.Client]:
    """A `celeritas dev` whose celeritas.toml limits the key `customer:slow` to 2 leases a second."""
    directory = tmp_path_factory.mktemp("rate-keys")
    (directory / "celeritas.toml").write_text(f'[rate_limits]\n"{LIMITED}" = "2/s"\n')
    with DevServer(celeritas_binary, working_directory=directory) as server:
        with celeritas.Client(server.url) as client:
            yield client


def test_tasks_carrying_a_limited_key_start_at_its_rate_and_the_others_do_not_wait(
    limited_client: celeritas.Client,
) -> None:
    limited = [limited_client.submit("noop", {"n": n}, rate_keys={LIMITED: 1}) for n in range(5)]
    plain = [limited_client.submit("noop", {"n": n}) for n in range(5)]

    plain_tasks = [limited_client.wait(submitted.task_id, timeout=30) for submitted in plain]
    limited_tasks = [limited_client.wait(submitted.task_id, timeout=60) for submitted in limited]

    assert all(task.state is TaskState.SUCCEEDED for task in plain_tasks + limited_tasks)
    starts = sorted(task.started_at for task in limited_tasks if task.started_at is not None)
    assert len(starts) == 5
    span = (starts[-1] - starts[0]).total_seconds()
    # Five leases at 2/s from a bucket that starts with one token take at least 2 s.
    assert 1.5 <= span <= 30, f"the limited tasks started over {span:.2f} s"


def test_a_rate_key_with_a_star_is_refused_naming_rate_keys(limited_client: celeritas.Client) -> None:
    with pytest.raises(celeritas.InvalidArgument) as refused:
        limited_client.submit("noop", rate_keys={"a*": 1})

    assert "rate_keys" in (refused.value.field or "") + str(refused.value)


def test_the_async_client_passes_rate_keys_too(limited_client: celeritas.Client) -> None:
    async def main() -> tuple[celeritas.Task, celeritas.InvalidArgument]:
        async with celeritas.AsyncClient(limited_client.url) as client:
            submitted = await client.submit("noop", rate_keys={LIMITED: 1})
            try:
                await client.submit("noop", rate_keys={"a*": 1})
            except celeritas.InvalidArgument as error:
                refused = error
            else:
                pytest.fail("a rate key with a star was accepted")
            return await client.wait(submitted.task_id, timeout=30), refused

    task, refused = asyncio.run(main())

    assert task.state is TaskState.SUCCEEDED
    assert "rate_keys" in (refused.field or "") + str(refused)


def test_costs_the_wire_cannot_carry_are_refused_before_sending(limited_client: celeritas.Client) -> None:
    with pytest.raises(ValueError, match="rate_keys"):
        limited_client.submit("noop", rate_keys={LIMITED: -1})
    with pytest.raises(TypeError, match="rate_keys"):
        limited_client.submit("noop", rate_keys={LIMITED: "1"})  # type: ignore[dict-item]
