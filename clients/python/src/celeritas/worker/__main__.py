"""``python -m celeritas.worker``: the worker's command line, in Celery's words."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from celeritas._connection import ENVIRONMENT, PemSource
from celeritas.worker import Setup, WorkerOptions, run_worker


def _split(values: list[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def parser() -> argparse.ArgumentParser:
    arguments = argparse.ArgumentParser(
        prog="python -m celeritas.worker",
        description="Runs a celeritas app's Python tasks for a coordinator.",
    )
    add_worker_arguments(arguments)
    arguments.add_argument(
        "-A", "--app", help="the app: package.module:attribute (or package.module holding `app`)"
    )
    arguments.add_argument(
        "-I", "--include", action="append", default=[], help="more task modules to import, comma-separated"
    )
    return arguments


def add_worker_arguments(arguments: argparse.ArgumentParser) -> None:
    """The options the worker shares with Django's ``celeritas_worker`` command."""
    arguments.add_argument(
        "-Q", "--queues", action="append", default=[], help="queues to consume, comma-separated"
    )
    arguments.add_argument("-c", "--concurrency", type=int, default=os.cpu_count() or 1, help="tasks at once")
    arguments.add_argument(
        "--prefetch-multiplier", type=int, default=1, help="leases held per unit of concurrency"
    )
    arguments.add_argument(
        "--url",
        action="append",
        default=[],
        help="a coordinator (repeat or comma-separate for several; default $CELERITAS_URL)",
    )
    arguments.add_argument(
        "--tls-ca",
        default=None,
        metavar="FILE",
        help="for https:// URLs: the CA (PEM) that signed the coordinator's certificate; "
        "default $CELERITAS_TLS_CA, else the system's roots",
    )
    arguments.add_argument(
        "--tls-cert",
        default=None,
        metavar="FILE",
        help="a client certificate (PEM) to present, the worker's identity; default $CELERITAS_TLS_CERT",
    )
    arguments.add_argument(
        "--tls-key",
        default=None,
        metavar="FILE",
        help="the client certificate's private key (PEM); default $CELERITAS_TLS_KEY",
    )
    arguments.add_argument(
        "--token",
        default=None,
        help="the API token sent with every call; default $CELERITAS_TOKEN (prefer it: a flag "
        "shows in ps)",
    )
    arguments.add_argument("-n", "--name", default="", help="the worker's id (default host:pid)")
    arguments.add_argument(
        "--shutdown-timeout", type=float, default=30.0, help="seconds to wait for running tasks"
    )
    arguments.add_argument(
        "--max-tasks-per-child", type=int, default=None, help="replace a child process after this many tasks"
    )
    arguments.add_argument("--execution-log", type=Path, default=None, help="append a JSON line per attempt")
    arguments.add_argument("-l", "--loglevel", default="INFO", help="DEBUG, INFO, WARNING, ERROR")


def options_from(
    parsed: argparse.Namespace,
    default_url: str | None = None,
    *,
    defaults: Mapping[str, PemSource | None] | None = None,
) -> WorkerOptions:
    """The worker's options from its command line. A setting not given there is taken from
    ``defaults`` (Django's settings: keys ``token``, ``tls_ca``, ``tls_cert``, ``tls_key``), then
    from the environment (``$CELERITAS_URL``, ``$CELERITAS_TOKEN``, ``$CELERITAS_TLS_CA``, ...).
    Settings that cannot work raise ``ValueError``."""
    urls = _split(parsed.url) or [default_url or os.environ.get("CELERITAS_URL") or "http://127.0.0.1:50051"]
    given = defaults or {}

    def setting(name: str) -> Any:
        return getattr(parsed, name, None) or given.get(name) or os.environ.get(ENVIRONMENT[name]) or None

    return WorkerOptions(
        urls=urls,
        queues=_split(parsed.queues) or ["default"],
        concurrency=parsed.concurrency,
        prefetch_multiplier=parsed.prefetch_multiplier,
        worker_id=parsed.name,
        token=setting("token"),
        tls_ca=setting("tls_ca"),
        tls_cert=setting("tls_cert"),
        tls_key=setting("tls_key"),
        shutdown_timeout=parsed.shutdown_timeout,
        max_tasks_per_child=parsed.max_tasks_per_child if (parsed.max_tasks_per_child or 0) > 0 else None,
        execution_log=parsed.execution_log,
    )


def main(argv: list[str] | None = None) -> int:
    parsed = parser().parse_args(argv)
    logging.basicConfig(
        level=parsed.loglevel.upper(), format="[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
    )
    # The app's module is found the way `python -m` finds it: from the working directory.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        options = options_from(parsed)
    except ValueError as error:
        print(f"celeritas worker: {error}", file=sys.stderr)
        return 2
    return run_worker(options, Setup(app=parsed.app, includes=tuple(_split(parsed.include))))


if __name__ == "__main__":
    sys.exit(main())
