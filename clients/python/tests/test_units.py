"""The pure parts of the client: URLs, metadata, the retry policy, errors and conversions.
Everything that talks to a coordinator is tested against a real one in the other files."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import grpc
import pytest

import celeritas
from celeritas import _wire
from celeritas._connection import call_metadata, parse_url
from celeritas.errors import error_from_rpc_error


@pytest.mark.parametrize(
    ("url", "target", "secure"),
    [
        ("http://127.0.0.1:50051", "127.0.0.1:50051", False),
        ("http://coordinator:50051/", "coordinator:50051", False),
        ("https://celeritas.example.com", "celeritas.example.com:443", True),
        ("https://celeritas.example.com:8443", "celeritas.example.com:8443", True),
        ("http://[::1]:50051", "[::1]:50051", False),
        ("127.0.0.1:50051", "127.0.0.1:50051", False),
        ("unix:/run/celeritas.sock", "unix:/run/celeritas.sock", False),
    ],
)
def test_urls_become_grpc_targets(url: str, target: str, secure: bool) -> None:
    endpoint = parse_url(url)
    assert (endpoint.target, endpoint.secure) == (target, secure)


@pytest.mark.parametrize("url", ["", "ftp://host:1", "http://host:1/api", "http://:50051"])
def test_urls_that_name_no_coordinator_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"^url: "):
        parse_url(url)


def test_the_token_travels_as_a_bearer_authorization() -> None:
    assert call_metadata("s3cret") == (("authorization", "Bearer s3cret"),)
    assert call_metadata(None) == ()
    with pytest.raises(ValueError):
        call_metadata("two\nlines")


def test_the_backoff_grows_to_its_cap_with_jitter() -> None:
    policy = celeritas.RetryPolicy(attempts=4, initial_backoff=1.0, max_backoff=3.0)
    for retries_done, ceiling in [(0, 1.0), (1, 2.0), (2, 3.0), (5, 3.0)]:
        delay = policy.backoff(retries_done)
        assert ceiling / 2 <= delay <= ceiling
    assert [policy.allows_retry(done) for done in range(4)] == [True, True, True, False]
    assert not celeritas.NO_RETRIES.allows_retry(0)
    with pytest.raises(ValueError):
        celeritas.RetryPolicy(attempts=0)


class FinishedCall(grpc.RpcError):
    """What gRPC raises for a call that ended with a status: an RpcError with code() and
    details(). Built here to check the mapping for every code without a server that fails
    in each way."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("code", "error_class"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, celeritas.InvalidArgument),
        (grpc.StatusCode.NOT_FOUND, celeritas.NotFound),
        (grpc.StatusCode.FAILED_PRECONDITION, celeritas.FailedPrecondition),
        (grpc.StatusCode.UNAVAILABLE, celeritas.Unavailable),
        (grpc.StatusCode.UNIMPLEMENTED, celeritas.Unimplemented),
        (grpc.StatusCode.UNAUTHENTICATED, celeritas.Unauthenticated),
        (grpc.StatusCode.DEADLINE_EXCEEDED, celeritas.DeadlineExceeded),
        (grpc.StatusCode.DATA_LOSS, celeritas.CeleritasError),
    ],
)
def test_status_codes_become_exception_classes(
    code: grpc.StatusCode, error_class: type[celeritas.CeleritasError]
) -> None:
    error = error_from_rpc_error(FinishedCall(code, "tasks[2].queue: unknown queue"))
    assert type(error) is error_class
    assert error.code is code
    assert error.field == "tasks[2].queue"
    assert str(error) == f"{code.name}: tasks[2].queue: unknown queue"


def test_an_error_without_details_still_says_what_happened() -> None:
    error = error_from_rpc_error(FinishedCall(grpc.StatusCode.UNIMPLEMENTED, ""))
    assert error.message == "the server answered UNIMPLEMENTED without a message"
    assert error.field is None


def test_a_spec_becomes_the_message_the_proto_describes() -> None:
    eta = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    spec = celeritas.TaskSpec(
        "send_campaign",
        {"campaign_id": "c-42"},
        queue="campaigns",
        priority=5,
        eta=eta,
        expires=timedelta(hours=1),
        max_retries=0,
        soft_time_limit=60,
        hard_time_limit=timedelta(minutes=2),
        idempotency_key="campaign-c-42",
    )

    message = _wire.task_spec_pb(spec, "task")

    assert message.name == "send_campaign"
    assert message.args_json == '{"campaign_id":"c-42"}'
    assert message.HasField("queue") and message.queue == "campaigns"
    assert message.HasField("max_retries") and message.max_retries == 0
    assert message.eta.ToDatetime(tzinfo=timezone.utc) == eta
    assert message.expires_in.ToTimedelta() == timedelta(hours=1)
    assert not message.HasField("expires_at") and not message.HasField("countdown")
    assert message.soft_time_limit.ToTimedelta() == timedelta(seconds=60)
    assert message.hard_time_limit.ToTimedelta() == timedelta(minutes=2)
    assert message.idempotency_key == "campaign-c-42"

    bare = _wire.task_spec_pb(celeritas.TaskSpec("noop"), "task")
    assert not bare.HasField("queue") and not bare.HasField("max_retries")
    assert bare.args_json == "" and bare.idempotency_key.startswith("auto-")
