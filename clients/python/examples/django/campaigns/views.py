"""Views that start a campaign and show its progress to a browser.

``task_progress_view`` streams a task tree's events as server-sent events: the browser's
``EventSource`` shows them as they come, and after a dropped connection it reconnects with a
``Last-Event-ID`` header, from which the stream resumes without a gap or a repeat.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.http import require_GET, require_POST

import celeritas
import celeritas.django
from campaigns.tasks import send_campaign


@require_POST
def send_campaign_view(request: HttpRequest, campaign_id: str) -> HttpResponse:
    recipients = int(request.POST.get("recipients", "10"))
    batch_size = int(request.POST.get("batch_size", "4"))
    handle = send_campaign(campaign_id, recipients=recipients, batch_size=batch_size)
    return JsonResponse({"task_id": handle.id}, status=202)


@require_GET
def task_status_view(request: HttpRequest, task_id: str) -> HttpResponse:
    try:
        task = celeritas.django.handle(task_id).task()
    except celeritas.NotFound as error:
        return JsonResponse({"error": error.message}, status=404)
    except celeritas.InvalidArgument as error:
        return JsonResponse({"error": error.message}, status=400)
    return JsonResponse(
        {
            "id": task.id,
            "name": task.name,
            "state": task.state.value,
            "result": task.result,
            "error": None if task.error is None else {"kind": task.error.kind, "message": task.error.message},
        }
    )


@require_GET
def task_progress_view(request: HttpRequest, task_id: str) -> HttpResponseBase:
    last_event_id = request.headers.get("Last-Event-ID")
    from_sequence = int(last_event_id) if last_event_id and last_event_id.isdigit() else None
    events = celeritas.django.handle(task_id).progress(from_sequence)
    response = StreamingHttpResponse(_server_sent_events(events), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    return response


def _server_sent_events(events: Iterator[celeritas.Event]) -> Iterator[str]:
    try:
        for event in events:
            yield f"id: {event.sequence}\nevent: {event.kind}\ndata: {json.dumps(event.to_dict())}\n\n"
    except celeritas.CeleritasError as error:
        # The response has started; the error can only travel as an event of its own.
        payload = json.dumps({"code": error.code.name, "message": error.message})
        yield f"event: error\ndata: {payload}\n\n"
