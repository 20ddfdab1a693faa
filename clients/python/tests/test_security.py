"""TLS and tokens, against real servers with certificates made here (tests/certificates.py).

- ``celeritas dev`` behind a self-signed certificate with ``[auth] required``: the clients trust
  the certificate (``tls_ca``) and send tokens of given roles.
- ``celeritas coordinator`` that also verifies client certificates (``client_ca_file``) and
  limits queues per identity: Python workers present certificates signed by the test's CA.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from certificates import Authority, Pair, self_signed_server
from worker_support import TESTS_DIRECTORY, PythonWorker

import celeritas
from celeritas import TaskState
from celeritas.testing import DevServer
from celeritas.worker.__main__ import options_from, parser

TLS_VARIABLES = ("CELERITAS_TOKEN", "CELERITAS_TLS_CA", "CELERITAS_TLS_CERT", "CELERITAS_TLS_KEY")


@pytest.fixture(autouse=True)
def no_credentials_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests give every credential themselves; none may come from the developer's shell."""
    for variable in TLS_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


def new_token() -> str:
    """A token as `celeritas tokens create` makes them: the prefix and 43 base64url characters."""
    return "celeritas_" + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Secured:
    server: DevServer
    url: str
    ca: Path
    #: Tokens by name: "submitter" (submit, read), "reader" (read), "admin".
    tokens: dict[str, str]
    directory: Path
    clients: Pair | None = None


def tokens_section(tokens: dict[str, str], roles: dict[str, list[str]]) -> str:
    return "".join(
        f'[auth.tokens.{name}]\nroles = {roles[name]!r}\nsha256 = "{digest(token)}"\n'.replace("'", '"')
        for name, token in tokens.items()
    )


TOKEN_ROLES = {"submitter": ["submit", "read"], "reader": ["read"], "admin": ["admin"]}


@pytest.fixture(scope="module")
def dev(celeritas_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """`celeritas dev` with TLS (a self-signed certificate, which its own worker trusts) and
    tokens required."""
    directory = tmp_path_factory.mktemp("tls-dev")
    pair = self_signed_server(directory)
    tokens = {name: new_token() for name in TOKEN_ROLES}
    (directory / "celeritas.toml").write_text(
        '[coordinator.tls]\ncert_file = "server.pem"\nkey_file = "server.key"\n\n'
        "[auth]\nrequired = true\n" + tokens_section(tokens, TOKEN_ROLES)
    )
    with DevServer(celeritas_binary, working_directory=directory) as server:
        yield Secured(server, f"https://127.0.0.1:{server.port}", pair.cert, tokens, directory)


# The blocking and asyncio clients over TLS.


def test_a_client_trusting_the_ca_with_a_token_submits_waits_and_streams_progress(dev: Secured) -> None:
    with celeritas.Client(dev.url, dev.tokens["submitter"], tls_ca=dev.ca) as client:
        submitted = client.submit("fan_out", {"task": "noop", "args": [{"n": 1}, {"n": 2}, {"n": 3}]})

        events = list(client.stream_progress(submitted.task_id))
        task = client.wait(submitted.task_id, timeout=30, tree=True)

    assert task.state is TaskState.SUCCEEDED
    assert events[-1].is_last and events[-1].tree_finished == celeritas.TreeFinished(TaskState.SUCCEEDED)
    assert events[-1].aggregate.tasks_total == 4 and events[-1].aggregate.tasks_finished == 4
    assert [event.sequence for event in events] == list(range(1, len(events) + 1))


def test_the_ca_may_be_given_as_pem_bytes_and_localhost_is_named_by_the_certificate(dev: Secured) -> None:
    url = f"https://localhost:{dev.server.port}"
    with celeritas.Client(url, dev.tokens["submitter"], tls_ca=dev.ca.read_bytes()) as client:
        submitted = client.submit("noop", {"pem": "bytes"})
        assert client.result(submitted.task_id, timeout=30) == {"pem": "bytes"}


def test_the_async_client_over_tls_submits_and_streams(dev: Secured) -> None:
    async def scenario() -> tuple[object, list[celeritas.Event]]:
        async with celeritas.AsyncClient(dev.url, dev.tokens["submitter"], tls_ca=dev.ca) as client:
            submitted = await client.submit("noop", {"async": True})
            events = [event async for event in client.stream_progress(submitted.task_id)]
            return await client.result(submitted.task_id, timeout=30), events

    result, events = asyncio.run(scenario())

    assert result == {"async": True}
    assert [event.kind for event in events][-1] == "tree_finished"


def test_settings_not_given_come_from_the_environment(dev: Secured, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERITAS_TLS_CA", str(dev.ca))
    monkeypatch.setenv("CELERITAS_TOKEN", dev.tokens["submitter"])

    with celeritas.Client(dev.url) as client:
        assert client.result(client.submit("noop", {"from": "env"}).task_id, timeout=30) == {"from": "env"}

    app = celeritas.Celeritas("tls-app", url=dev.url)
    try:
        assert app.client.result(app.client.submit("noop", {"app": 1}).task_id, timeout=30) == {"app": 1}
    finally:
        app.client.close()


def test_the_app_passes_its_tls_settings_to_its_client(dev: Secured) -> None:
    app = celeritas.Celeritas("tls-app", url=dev.url, token=dev.tokens["submitter"], tls_ca=dev.ca)
    try:
        assert app.client.result(app.client.submit("noop", {"app": 2}).task_id, timeout=30) == {"app": 2}
    finally:
        app.client.close()


def test_without_the_ca_the_self_signed_certificate_is_not_trusted(dev: Secured) -> None:
    retry = celeritas.RetryPolicy(attempts=1)
    with celeritas.Client(dev.url, dev.tokens["submitter"], timeout=5, retry=retry) as client:
        with pytest.raises(celeritas.Unavailable):
            client.submit("noop", {})


# Refusals.


def test_a_call_without_a_token_is_unauthenticated(dev: Secured) -> None:
    with celeritas.Client(dev.url, tls_ca=dev.ca) as client:
        # The health service is open to anyone: the TLS itself works.
        assert client.health() is celeritas.HealthStatus.SERVING
        with pytest.raises(celeritas.Unauthenticated) as refused:
            client.submit("noop", {})

    assert "token" in str(refused.value)


def test_an_unknown_token_is_unauthenticated_and_never_shown(dev: Secured) -> None:
    stranger = new_token()
    with celeritas.Client(dev.url, stranger, tls_ca=dev.ca) as client:
        with pytest.raises(celeritas.Unauthenticated) as refused:
            client.submit("noop", {})
        shown = [repr(client), str(client)]

    assert stranger not in str(refused.value) and stranger not in repr(refused.value)
    assert all(stranger not in text for text in shown)


def test_a_read_only_token_may_read_but_not_submit(dev: Secured) -> None:
    with celeritas.Client(dev.url, dev.tokens["reader"], tls_ca=dev.ca) as client:
        assert isinstance(client.inspect.queues(), list)
        with pytest.raises(celeritas.PermissionDenied) as refused:
            client.submit("noop", {})

    assert "submit" in str(refused.value)
    assert dev.tokens["reader"] not in str(refused.value)


# Settings refused before any call.


def test_tls_settings_with_a_plaintext_url_are_refused(tmp_path: Path) -> None:
    pair = self_signed_server(tmp_path)
    for url in ("http://127.0.0.1:50051", "127.0.0.1:50051", "unix:/tmp/celeritas.sock"):
        with pytest.raises(ValueError, match=r"^tls_ca: .*https://"):
            celeritas.Client(url, tls_ca=pair.cert)
    with pytest.raises(ValueError, match=r"^tls_cert: .*https://"):
        celeritas.Client("http://127.0.0.1:50051", tls_cert=pair.cert, tls_key=pair.key)
    with pytest.raises(ValueError, match=r"^tls_ca: .*https://"):
        celeritas.AsyncClient("http://127.0.0.1:50051", tls_ca=pair.cert)
    with pytest.raises(ValueError, match=r"^tls_ca: "):
        celeritas.Celeritas(url="http://127.0.0.1:50051", tls_ca=pair.cert).client  # noqa: B018


def test_tls_settings_from_the_environment_with_a_plaintext_url_are_refused_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = self_signed_server(tmp_path)
    monkeypatch.setenv("CELERITAS_TLS_CA", str(pair.cert))

    with pytest.raises(ValueError, match=r"^tls_ca \(\$CELERITAS_TLS_CA\): .*https://"):
        celeritas.Client("http://127.0.0.1:50051")


def test_unreadable_or_incomplete_tls_settings_are_named(tmp_path: Path) -> None:
    pair = self_signed_server(tmp_path)
    url = "https://127.0.0.1:50051"
    missing = tmp_path / "missing.pem"
    with pytest.raises(ValueError, match=rf"^tls_ca: cannot read {missing}"):
        celeritas.Client(url, tls_ca=missing)
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    with pytest.raises(ValueError, match=rf"^tls_cert: {not_pem} is not PEM"):
        celeritas.Client(url, tls_cert=not_pem, tls_key=pair.key)
    with pytest.raises(ValueError, match=r"^tls_key: needed with tls_cert"):
        celeritas.Client(url, tls_cert=pair.cert)
    with pytest.raises(ValueError, match=r"^tls_cert: needed with tls_key"):
        celeritas.Client(url, tls_key=pair.key)
    with pytest.raises(ValueError, match=r"^token: must be non-empty and on one line$"):
        celeritas.Client(url, "celeritas_secret\nX-Other: header")


def test_worker_options_take_the_flags_or_the_environment_and_never_show_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = self_signed_server(tmp_path)
    token = new_token()
    flags = ["--url", "https://127.0.0.1:50051", "--tls-ca", str(pair.cert), "--tls-cert", str(pair.cert)]
    options = options_from(parser().parse_args([*flags, "--tls-key", str(pair.key), "--token", token]))
    assert (options.tls_ca, options.tls_cert, options.tls_key) == (
        str(pair.cert),
        str(pair.cert),
        str(pair.key),
    )
    assert options.token == token and token not in repr(options)

    monkeypatch.setenv("CELERITAS_TLS_KEY", str(pair.key))
    monkeypatch.setenv("CELERITAS_TOKEN", token)
    from_environment = options_from(parser().parse_args(flags))
    assert from_environment.tls_key == str(pair.key) and from_environment.token == token

    monkeypatch.delenv("CELERITAS_TLS_KEY")
    with pytest.raises(ValueError, match=r"^tls_key: needed with tls_cert"):
        options_from(parser().parse_args(flags))


def test_a_worker_with_a_ca_and_a_plaintext_url_stops_before_connecting(tmp_path: Path) -> None:
    pair = self_signed_server(tmp_path)
    finished = subprocess.run(
        [
            *(sys.executable, "-m", "celeritas.worker", "-A", "worker_tasks:app"),
            *("--url", "http://127.0.0.1:1", "--tls-ca", str(pair.cert)),
        ],
        cwd=TESTS_DIRECTORY,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert finished.returncode == 2, finished.stderr
    assert "celeritas worker: tls_ca: a CA or a client certificate is for TLS" in finished.stderr


# Python workers with client certificates.


@pytest.fixture(scope="module")
def verifying(celeritas_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """`celeritas coordinator` (no worker of its own) with TLS, client certificates verified
    against the test's CA, tokens required, and the queue "default" only for the identity
    "worker-a"."""
    directory = tmp_path_factory.mktemp("tls-verifying")
    authority = Authority(directory)
    authority.server()
    tokens = {"admin": new_token()}
    (directory / "celeritas.toml").write_text(
        '[coordinator.tls]\ncert_file = "server.pem"\nkey_file = "server.key"\n'
        f'client_ca_file = "{authority.pem.name}"\nrequire_client_cert = false\n\n'
        "[auth]\nrequired = true\n" + tokens_section(tokens, TOKEN_ROLES) + "\n"
        '[auth.worker_queues]\n"worker-a" = ["default"]\n'
    )
    with DevServer(celeritas_binary, working_directory=directory, builtin_worker=False) as server:
        yield Secured(
            server,
            f"https://127.0.0.1:{server.port}",
            authority.pem,
            tokens,
            directory,
            clients=authority.client("worker-a"),
        )


def test_a_python_worker_with_a_client_certificate_runs_python_tasks(verifying: Secured) -> None:
    assert verifying.clients is not None
    certificate = verifying.clients
    admin = {"token": verifying.tokens["admin"], "tls_ca": verifying.ca}
    worker = PythonWorker(
        verifying.url,
        verifying.directory,
        name="py-certified",
        queues="default",
        extra=[
            *("--tls-ca", str(verifying.ca)),
            *("--tls-cert", str(certificate.cert)),
            *("--tls-key", str(certificate.key)),
        ],
        client_options=admin,
    )
    with worker, celeritas.Client(verifying.url, **admin) as client:
        added = client.submit("t.add", {"x": 20, "y": 22}, queue="default")
        greeted = client.submit("t.greet", {"name": "TLS"}, queue="default")

        assert client.result(added.task_id, timeout=30) == 42
        assert client.result(greeted.task_id, timeout=30) == "hello TLS"
        ran_on = {client.get(added.task_id).worker_id, client.get(greeted.task_id).worker_id}
        assert ran_on == {"py-certified"}

    assert worker.process is not None and worker.process.returncode == 0, worker.log_tail()


def test_a_python_worker_whose_identity_may_not_consume_its_queue_exits_naming_it(
    verifying: Secured,
) -> None:
    assert verifying.clients is not None
    certificate = verifying.clients
    worker = PythonWorker(
        verifying.url,
        verifying.directory,
        name="py-wrong-queue",
        queues="secret",
        # From the environment this time, as a deployment sets them.
        environment={
            "CELERITAS_TLS_CA": str(verifying.ca),
            "CELERITAS_TLS_CERT": str(certificate.cert),
            "CELERITAS_TLS_KEY": str(certificate.key),
        },
    ).start(wait=False)

    exit_code = worker.wait_exited(timeout=60)

    log = worker.log_tail()
    assert exit_code != 0, log
    assert "the coordinator refused this worker:" in log
    # (The coordinator prints the queue as `QueueName("secret")` today; either way it is named.)
    assert re.search(r'may not consume the queue \S*"secret"', log), log
    assert 'the identity "worker-a"' in log, "the certificate's common name is the identity"


def test_a_python_worker_without_credentials_is_refused_and_exits(verifying: Secured) -> None:
    worker = PythonWorker(
        verifying.url,
        verifying.directory,
        name="py-anonymous",
        queues="default",
        extra=["--tls-ca", str(verifying.ca)],
    ).start(wait=False)

    exit_code = worker.wait_exited(timeout=60)

    log = worker.log_tail()
    assert exit_code != 0, log
    assert "the coordinator refused this worker:" in log and "token" in log


# Django's settings.


def test_django_settings_carry_the_token_and_the_ca_to_both_clients(dev: Secured) -> None:
    from django.conf import settings
    from django.test import override_settings

    import celeritas.django
    from celeritas.django.app import app as django_app

    if not settings.configured:
        settings.configure()
    secured = {
        "CELERITAS_URL": dev.url,
        "CELERITAS_TOKEN": dev.tokens["submitter"],
        "CELERITAS_TLS_CA": str(dev.ca),
    }
    with override_settings(**secured):
        handle = celeritas.django.task("noop").delay(django="tls")
        assert handle.get(timeout=30) == {"django": "tls"}
        assert django_app.client.result(django_app.client.submit("noop", {"app": 3}).task_id, timeout=30) == {
            "app": 3
        }
    with override_settings(CELERITAS_URL=dev.server.url, CELERITAS_TLS_CA=str(dev.ca)):
        with pytest.raises(ValueError, match=r"^tls_ca: .*https://"):
            celeritas.django.get_client()
