"""Django integration: call celeritas tasks the way Celery tasks are called.

Settings (``settings.py``):

- ``CELERITAS_URL``: the coordinator, e.g. ``"http://celeritas:50051"``
  (default ``"http://127.0.0.1:50051"``).
- ``CELERITAS_TOKEN``: sent as ``authorization: Bearer <token>`` when set (default None).

Add ``"celeritas.django"`` to ``INSTALLED_APPS`` for the ``celeritas_follow`` management
command. Then, in any module::

    import celeritas.django

    send_campaign = celeritas.django.task("send_campaign")

    # The args as the top README's "Email campaigns" lists them (``from`` is a keyword, so a
    # dict): campaign_id, from, subject, text and/or html, recipients, ...
    handle = send_campaign.apply_async(campaign)
    handle.id                        # store it; celeritas.django.handle(id) rebuilds the handle
    for event in handle.progress():  # every event of the task's tree, to the end
        print(event.aggregate.tasks_finished, "/", event.aggregate.tasks_total)
    handle.get(timeout=60)           # the result; raises celeritas.TaskFailed if it failed
    handle.get(timeout=3600, tree=True)  # the same, once every batch has finished too

The client is created on first use and shared by the process (it is thread-safe). Under a
pre-forking server (``gunicorn --preload``) make the first call after the fork: gRPC channels do
not survive ``fork()``.
"""

from celeritas.django.tasks import RemoteTask, get_client, handle, task

__all__ = ["RemoteTask", "get_client", "handle", "task"]
