"""The example's tests, run by Django's test runner (`python manage.py test`) against a real
`celeritas dev` they start: `$CELERITAS_BIN`, or `target/debug/celeritas` at the repository root.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from io import StringIO
from pathlib import Path
from typing import Any, ClassVar

from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test import SimpleTestCase, TransactionTestCase, override_settings

import celeritas
import celeritas.django
from campaigns.models import Recipient
from campaigns.tasks import deliver, send_campaign, welcome
from celeritas.testing import DevServer, find_binary

REPOSITORY_ROOT = Path(__file__).resolve().parents[5]

server: DevServer | None = None
settings_override: override_settings | None = None


def setUpModule() -> None:
    global server, settings_override
    server = DevServer(find_binary(default=REPOSITORY_ROOT / "target" / "debug" / "celeritas"))
    server.start()
    settings_override = override_settings(CELERITAS_URL=server.url, CELERITAS_TOKEN="example-token")
    settings_override.enable()


def tearDownModule() -> None:
    if settings_override is not None:
        settings_override.disable()
    if server is not None:
        server.close()


def wait_until(condition: Callable[[], Any], timeout: float = 30.0, what: str = "the condition") -> Any:
    """Polls ``condition`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        time.sleep(0.05)
    return value


def read_server_sent_events(response: Any) -> list[dict[str, str]]:
    """Reads a streaming response to its end and splits it into its events' fields (id,
    event, data)."""
    body = b"".join(response.streaming_content)
    events = []
    for block in body.decode().split("\n\n"):
        if block.strip():
            fields = dict(line.split(": ", 1) for line in block.splitlines())
            events.append(fields)
    return events


class SendingACampaignTests(SimpleTestCase):
    def test_the_browser_sees_every_event_of_the_campaign_to_the_end(self) -> None:
        sent = self.client.post("/campaigns/c-42/send", {"recipients": "10", "batch_size": "4"})
        self.assertEqual(sent.status_code, 202)
        task_id = sent.json()["task_id"]

        progress = self.client.get(f"/tasks/{task_id}/progress")

        self.assertEqual(progress["Content-Type"], "text/event-stream")
        events = read_server_sent_events(progress)
        self.assertEqual([int(event["id"]) for event in events], list(range(1, len(events) + 1)))
        last = json.loads(events[-1]["data"])
        self.assertEqual(events[-1]["event"], "tree_finished")
        self.assertEqual(last["tree_finished"]["root_state"], "succeeded")
        # The root, three batches (4 + 4 + 2 recipients) and the callback.
        self.assertEqual(last["aggregate"]["tasks_total"], 5)
        self.assertEqual(last["aggregate"]["tasks_finished"], 5)
        self.assertEqual(last["aggregate"]["records_by_status"], {"delivered": 10})

        status = self.client.get(f"/tasks/{task_id}").json()
        self.assertEqual(status["state"], "succeeded")
        self.assertEqual(status["result"]["children"], 3)

    def test_a_reconnecting_browser_resumes_after_its_last_event(self) -> None:
        handle = send_campaign("c-43", recipients=6, batch_size=2)
        everything = read_server_sent_events(self.client.get(f"/tasks/{handle.id}/progress"))

        resumed = read_server_sent_events(
            self.client.get(f"/tasks/{handle.id}/progress", HTTP_LAST_EVENT_ID="2")
        )

        self.assertEqual(resumed, everything[2:])

    def test_an_unknown_task_is_a_404(self) -> None:
        answer = self.client.get("/tasks/00000000-0000-0000-0000-000000000000")
        self.assertEqual(answer.status_code, 404)
        self.assertTrue(answer.json()["error"].startswith("task_id:"))


class CeleryLikeCallsTests(SimpleTestCase):
    def test_delay_returns_a_handle_whose_progress_and_result_can_be_read(self) -> None:
        handle = send_campaign("c-44", recipients=3, batch_size=2)

        events = list(handle.progress())

        self.assertEqual(events[-1].tree_finished, celeritas.TreeFinished(celeritas.TaskState.SUCCEEDED))
        self.assertEqual(events[-1].aggregate.records_by_status, {"delivered": 3})
        self.assertEqual(handle.get(timeout=20)["children"], 2)
        self.assertIs(handle.status(), celeritas.TaskState.SUCCEEDED)
        self.assertTrue(handle.created)
        self.assertEqual(celeritas.django.handle(handle.id), handle)
        delivered = list(handle.records(whole_tree=True, status="delivered"))
        self.assertEqual(len(delivered), 3)

    def test_get_raises_when_the_task_failed(self) -> None:
        bounce = celeritas.django.task("fail")

        handle = bounce.delay(retryable=False, kind="smtp_permanent", message="no such mailbox")

        with self.assertRaises(celeritas.TaskFailed) as failure:
            handle.get(timeout=20)
        self.assertEqual(failure.exception.error, celeritas.TaskError("smtp_permanent", "no such mailbox"))

    def test_apply_async_takes_options_and_cancel_stops_the_task(self) -> None:
        nap = celeritas.django.task("sleep", queue="email")

        handle = nap.apply_async({"ms": 60_000}, countdown=600, priority=9)

        task = handle.task()
        self.assertEqual((task.state, task.queue, task.priority), (celeritas.TaskState.SCHEDULED, "email", 9))
        self.assertIs(handle.cancel().state, celeritas.TaskState.CANCELLED)
        self.assertTrue(handle.ready())

    def test_positional_arguments_are_refused_with_a_reason(self) -> None:
        with self.assertRaisesMessage(TypeError, "keyword arguments only"):
            celeritas.django.task("noop").delay("c-42")


class FollowCommandTests(SimpleTestCase):
    def test_celeritas_follow_prints_progress_until_the_task_ends(self) -> None:
        handle = send_campaign("c-45", recipients=4, batch_size=2)
        output = StringIO()

        call_command("celeritas_follow", handle.id, stdout=output)

        lines = output.getvalue().splitlines()
        self.assertTrue(lines[0].startswith("[1] running"), lines)
        self.assertIn("tree finished, root succeeded", lines[-1])
        self.assertIn("tasks 4/4 finished", lines[-1])
        self.assertIn("records delivered=4", lines[-1])

    def test_celeritas_follow_prints_json_and_fails_for_a_failed_task(self) -> None:
        handle = celeritas.django.task("fail").delay(retryable=False, kind="bounce")
        output = StringIO()

        with self.assertRaisesMessage(CommandError, f"task {handle.id} ended failed"):
            call_command("celeritas_follow", handle.id, "--json", stdout=output)

        events = [json.loads(line) for line in output.getvalue().splitlines()]
        self.assertEqual(events[-1]["kind"], "tree_finished")
        self.assertEqual(events[-1]["tree_finished"]["root_state"], "failed")

    def test_celeritas_follow_follows_a_child_by_its_state(self) -> None:
        root = send_campaign("c-46", recipients=1, batch_size=1)
        root.get(timeout=20)
        child_id = next(root.records(whole_tree=True)).task_id
        output = StringIO()

        call_command("celeritas_follow", child_id, stdout=output)

        lines = output.getvalue().splitlines()
        self.assertIn(f"belongs to the tree of {root.id}", lines[0])
        self.assertEqual(lines[-1], "succeeded")

    def test_celeritas_follow_reports_an_unknown_task(self) -> None:
        with self.assertRaisesMessage(CommandError, "NOT_FOUND: task_id:"):
            call_command("celeritas_follow", "00000000-0000-0000-0000-000000000000")


class ProjectTasksTests(TransactionTestCase):
    """The project's own tasks (``campaigns/tasks.py``), run by ``manage.py celeritas_worker``
    against the test database, beside the Rust worker of ``celeritas dev``."""

    worker: ClassVar[subprocess.Popen[bytes]]
    worker_log: ClassVar[Path]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        assert server is not None
        cls.worker_log = server.working_directory / "django-worker.log"
        environment = {**os.environ, "EXAMPLE_DATABASE": str(connection.settings_dict["NAME"])}
        with open(cls.worker_log, "ab") as log:
            cls.worker = subprocess.Popen(
                [
                    *(sys.executable, "manage.py", "celeritas_worker", "-Q", "import,default", "-c", "2"),
                    *("--url", server.url, "--name", "django-worker"),
                ],
                cwd=Path(__file__).resolve().parents[1],
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        client = celeritas.django.get_client()

        def connected() -> bool:
            if cls.worker.poll() is not None:
                raise AssertionError(f"the worker exited: {cls.worker_log.read_text()}")
            return any(
                entry.worker_id == "django-worker" and entry.connected
                for entry in client.inspect.registered()
            )

        wait_until(connected, 60, "the Django worker connecting")

    @classmethod
    def tearDownClass(cls) -> None:
        cls.worker.send_signal(signal.SIGTERM)
        exit_code = cls.worker.wait(60)
        super().tearDownClass()
        assert exit_code == 0, cls.worker_log.read_text()

    def test_a_task_reads_and_writes_the_models_and_its_result_and_records_reach_the_client(self) -> None:
        Recipient.objects.bulk_create(
            [Recipient(campaign_id="c-50", email=f"user{number}@example.org") for number in range(3)]
        )

        handle = deliver.delay(campaign_id="c-50")

        self.assertIsInstance(handle, celeritas.TaskHandle)
        self.assertEqual(handle.get(timeout=30), {"campaign_id": "c-50", "delivered": 3, "recipients": 3})
        self.assertEqual(handle.task().worker_id, "django-worker")
        statuses = set(Recipient.objects.filter(campaign_id="c-50").values_list("status", flat=True))
        self.assertEqual(statuses, {"delivered"})
        self.assertEqual(
            sorted(record.key for record in handle.records()),
            [f"user{number}@example.org" for number in range(3)],
        )

    def test_delay_on_commit_submits_nothing_when_the_transaction_rolls_back(self) -> None:
        rolled_back = f"rolled-back-{uuid.uuid4()}@example.org"
        committed = f"committed-{uuid.uuid4()}@example.org"

        with self.assertRaises(RuntimeError), transaction.atomic():
            Recipient.objects.create(campaign_id="c-51", email=rolled_back)
            welcome.delay_on_commit(email=rolled_back)
            raise RuntimeError("signup failed")
        with transaction.atomic():
            Recipient.objects.create(campaign_id="c-51", email=committed)
            welcome.delay_on_commit(email=committed)

        client = celeritas.django.get_client()

        def welcomed() -> list[Any]:
            tasks = client.list_tasks(names=["campaigns.welcome"], include_payloads=True)
            return [task for task in tasks if task.args["email"] in (rolled_back, committed)]

        tasks = wait_until(welcomed, what="the committed welcome being submitted")
        self.assertEqual([task.args["email"] for task in tasks], [committed])
        self.assertEqual(client.result(tasks[0].id, timeout=30), f"welcome {committed}")
        self.assertEqual(Recipient.objects.filter(email=rolled_back).count(), 0)

    @override_settings(CELERITAS_TASK_ALWAYS_EAGER=True)
    def test_eager_mode_runs_the_task_inline(self) -> None:
        Recipient.objects.create(campaign_id="c-52", email="eager@example.org")

        result = deliver.delay(campaign_id="c-52")

        self.assertIsInstance(result, celeritas.EagerResult)
        self.assertEqual(result.get()["delivered"], 1)
        self.assertEqual(Recipient.objects.get(campaign_id="c-52").status, "delivered")
        self.assertEqual([record.key for record in result.emitted], ["eager@example.org"])
