"""The example's tests, run by Django's test runner (`python manage.py test`) against a real
`celeritas dev` they start: `$CELERITAS_BIN`, or `target/debug/celeritas` at the repository root.
"""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

from django.core.management import CommandError, call_command
from django.test import SimpleTestCase, override_settings

import celeritas
import celeritas.django
from campaigns.tasks import send_campaign
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
