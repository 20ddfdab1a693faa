"""``manage.py celeritas_worker -Q import,default -c 4``: runs the project's Python tasks.

Django is set up in the worker and in each child process, every installed app's ``tasks``
module is imported (Celery's autodiscovery), and stale database connections are closed before
and after each task in the children (as Celery does), so a task never uses a connection the
database dropped while the child sat idle.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from django.core.management.base import BaseCommand, CommandError, OutputWrapper

from celeritas.django.app import app
from celeritas.worker import Setup, run_worker
from celeritas.worker.__main__ import add_worker_arguments, options_from


class _CommandLogHandler(logging.Handler):
    """The worker's log lines, written the way the command writes (its stderr, styled)."""

    def __init__(self, command: BaseCommand, stream: OutputWrapper) -> None:
        super().__init__()
        self.command = command
        self.stream = stream
        self.setFormatter(logging.Formatter("[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        if record.levelno >= logging.ERROR:
            text = self.command.style.ERROR(text)
        elif record.levelno >= logging.WARNING:
            text = self.command.style.WARNING(text)
        self.stream.write(text)


class Command(BaseCommand):
    help = "Runs this project's celeritas tasks (its apps' tasks.py) for the coordinator."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_worker_arguments(parser)
        parser.add_argument(
            "-I",
            "--include",
            action="append",
            default=[],
            help="more task modules to import, comma-separated",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        parsed = argparse.Namespace(**options)
        logger = logging.getLogger("celeritas.worker")
        logger.setLevel(str(options["loglevel"]).upper())
        logger.addHandler(_CommandLogHandler(self, self.stderr))
        logger.propagate = False
        try:
            worker_options = options_from(
                parsed,
                default_url=app.url,
                defaults={
                    "token": app.token,
                    "tls_ca": app.tls_ca,
                    "tls_cert": app.tls_cert,
                    "tls_key": app.tls_key,
                },
            )
        except ValueError as error:
            raise CommandError(str(error)) from error
        includes = tuple(
            part.strip() for value in options["include"] for part in value.split(",") if part.strip()
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"celeritas worker {worker_options.worker_id}: queues {','.join(worker_options.queues)}, "
                f"-c {worker_options.concurrency}, coordinator {', '.join(worker_options.urls)}"
            )
        )
        exit_code = run_worker(
            worker_options,
            Setup(django=True, includes=includes),
            errors=lambda text: self.stderr.write(self.style.ERROR(text)),
        )
        if exit_code != 0:
            raise CommandError(f"the worker stopped with exit code {exit_code}", returncode=exit_code)
