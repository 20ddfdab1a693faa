"""Django integration: declare Python tasks (``shared_task``) and call any celeritas task the
way Celery tasks are called; ``manage.py celeritas_worker`` runs the project's tasks.

Settings (``settings.py``):

- ``CELERITAS_URL``: the coordinator, e.g. ``"http://celeritas:50051"``
  (default ``"http://127.0.0.1:50051"``).
- ``CELERITAS_TOKEN``: sent as ``authorization: Bearer <token>`` when set (default None).
- ``CELERITAS_TLS_CA``, ``CELERITAS_TLS_CERT``, ``CELERITAS_TLS_KEY``: for an ``https://`` URL,
  the CA to trust and a client certificate and key (paths or PEM bytes; default None).
- Each of these four, unset, falls back to the environment variable of the same name.
- ``CELERITAS_TASK_ALWAYS_EAGER``: run ``.delay()`` inline (for tests); default
  ``$CELERITAS_TASK_ALWAYS_EAGER``.

Add ``"celeritas.django"`` to ``INSTALLED_APPS`` for the ``celeritas_worker`` and
``celeritas_follow`` management commands. Then, in an app's ``tasks.py``::

    from celeritas.django import shared_task

    @shared_task(queue="import", max_retries=3)
    def import_contacts(list_id: int) -> dict: ...

    import_contacts.delay(list_id=7)             # or .delay_on_commit(list_id=7)

and tasks other workers run (the Rust built-ins) by name::

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

from celeritas.django.app import DjangoCeleritas, app, shared_task
from celeritas.django.tasks import RemoteTask, get_client, handle, task

__all__ = ["DjangoCeleritas", "RemoteTask", "app", "get_client", "handle", "shared_task", "task"]
