"""``manage.py celeritas_follow TASK_ID``: prints a task's progress until it finishes.

For a root task, every event of its tree, one line each (``--json``: one JSON object each),
resuming by itself if the coordinator restarts. For a child task, which has no stream of its own,
its state changes. Exits 0 when the task succeeded and 1 otherwise.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from celeritas.client import Client
from celeritas.django.tasks import get_client
from celeritas.errors import CeleritasError
from celeritas.models import Task, TaskState


class Command(BaseCommand):
    help = "Prints a celeritas task's progress until it finishes; exits 1 if it did not succeed."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("task_id", help="the task to follow")
        parser.add_argument(
            "--from-sequence",
            type=int,
            default=None,
            help="start after this event (a root task's tree only)",
        )
        parser.add_argument("--json", action="store_true", help="print each event as one JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        task_id: str = options["task_id"]
        client = get_client()
        try:
            task = client.get(task_id)
            if task.is_root:
                final_state = self._follow_tree(client, task, options["from_sequence"], options["json"])
            else:
                final_state = self._follow_child(client, task)
        except CeleritasError as error:
            raise CommandError(str(error)) from error
        if final_state is not TaskState.SUCCEEDED:
            raise CommandError(f"task {task_id} ended {final_state.value}")

    def _follow_tree(self, client: Client, task: Task, from_sequence: int | None, as_json: bool) -> TaskState:
        final_state = task.state
        for event in client.stream_progress(task.id, from_sequence):
            self.stdout.write(json.dumps(event.to_dict()) if as_json else event.describe())
            if event.tree_finished is not None:
                final_state = event.tree_finished.root_state
        return final_state

    def _follow_child(self, client: Client, task: Task) -> TaskState:
        # Only a root's tree has a progress stream; a child's own state is what there is to see.
        self.stdout.write(
            f"task {task.id} belongs to the tree of {task.root_id} (follow that one for the "
            "whole tree); following its own state"
        )
        self.stdout.write(task.state.value)
        last_state = task.state
        while not task.is_finished:
            task = client.get(task.id, wait=30)
            if task.state is not last_state:
                self.stdout.write(task.state.value)
                last_state = task.state
        if task.error is not None and task.state is not TaskState.SUCCEEDED:
            self.stdout.write(f"error: {task.error.kind}: {task.error.message}")
        return task.state
