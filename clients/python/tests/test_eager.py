"""Declaring tasks and eager mode, without a server: what a team's unit tests rely on."""

from __future__ import annotations

from typing import Any

import pytest

import celeritas
from celeritas import Celeritas, PermanentError, TaskContext


def make_app() -> Celeritas:
    app = Celeritas("eager-tests", task_always_eager=True)

    @app.task
    def add(x: int, y: int = 1) -> int:
        return x + y

    @app.task(name="eager.flaky", bind=True, max_retries=2)
    def flaky(self: TaskContext, failures: int) -> int:
        if self.request.retries < failures:
            raise self.retry(countdown=5)
        return self.request.attempt

    @app.task(name="eager.report", bind=True)
    def report(self: TaskContext, items: list[str]) -> list[str]:
        for item in items:
            self.emit("item", item, "done")
        self.submit_children([add.s(x=1)], callback=add.s(x=10))
        return sorted(self.recorded_keys("item"))

    @app.task(name="eager.async")
    async def double(x: int) -> int:
        return 2 * x

    @app.task(name="eager.refuse")
    def refuse() -> None:
        raise PermanentError("no")

    return app


def test_default_names_are_module_and_function_like_celery() -> None:
    app = make_app()
    assert f"{__name__}.add" in app.tasks


def test_delay_runs_inline_and_get_returns_the_result() -> None:
    app = make_app()
    add = app.tasks[f"{__name__}.add"]

    result = add.delay(2, y=5)

    assert isinstance(result, celeritas.EagerResult)
    assert result.get() == 7 and result.successful() and result.id
    assert add.apply_async({"x": 3}).get() == 4
    assert add(4) == 5


def test_retries_run_inline_up_to_max_retries() -> None:
    app = make_app()
    flaky = app.tasks["eager.flaky"]

    assert flaky.delay(failures=2).get() == 3
    with pytest.raises(celeritas.Retry):
        flaky.delay(failures=5).get()


def test_records_children_and_async_tasks_run_eagerly() -> None:
    app = make_app()
    result = app.tasks["eager.report"].delay(items=["b", "a"])

    assert result.get() == ["a", "b"]
    assert [child.get() for child in result.children] == [2, 11]
    assert app.tasks["eager.async"].delay(x=21).get() == 42


def test_a_failure_propagates_from_get() -> None:
    app = make_app()
    result = app.tasks["eager.refuse"].delay()
    assert not result.successful()
    with pytest.raises(PermanentError):
        result.get()
    assert isinstance(result.get(propagate=False), PermanentError)


def test_arguments_that_do_not_fit_are_refused_when_called() -> None:
    app = make_app()
    with pytest.raises(TypeError, match="missing a required argument: 'x'"):
        app.tasks[f"{__name__}.add"].delay(y=2)
    with pytest.raises(TypeError, match="not JSON-serializable"):
        app.tasks[f"{__name__}.add"].delay(x=object())


def test_eager_mode_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    app = Celeritas("from-environment")
    monkeypatch.setenv("CELERITAS_TASK_ALWAYS_EAGER", "1")
    assert app.task_always_eager
    monkeypatch.setenv("CELERITAS_TASK_ALWAYS_EAGER", "0")
    assert not app.task_always_eager


def test_a_duplicate_name_is_refused_by_check() -> None:
    app = Celeritas("duplicates")

    @app.task(name="same")
    def one() -> None: ...

    def two() -> None: ...

    app.task(name="same")(two)
    with pytest.raises(celeritas.DuplicateTaskName, match="registered twice"):
        app.check()


def test_signatures_carry_the_declared_options() -> None:
    app = Celeritas("signatures")

    @app.task(name="sig", queue="import", priority=5, max_retries=2, soft_time_limit=10, time_limit=20)
    def sig(**values: Any) -> None: ...

    spec = sig.s(a=1, b=2)
    assert (spec.name, spec.args, spec.queue, spec.priority, spec.max_retries) == (
        "sig",
        {"a": 1, "b": 2},
        "import",
        5,
        2,
    )
    assert (spec.soft_time_limit, spec.hard_time_limit) == (10, 20)
