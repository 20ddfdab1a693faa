"""The READMEs' examples of ``send_campaign`` args are args the task accepts.

Every Python block of the top README and of this package's README must parse; the
``send_campaign`` args in them (``campaign = {...}``, ``send_campaign.delay(...)``,
``submit("send_campaign", {...})``) are submitted to a ``celeritas dev`` whose worker has a relay, and
the campaign task must succeed (it checks every field, the templates and the relay before it
queues a batch, and fails with ``invalid_args`` naming the field otherwise).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import celeritas
from celeritas.testing import DevServer, free_port

REPOSITORY_ROOT = Path(__file__).resolve().parents[3]
READMES = [REPOSITORY_ROOT / "README.md", REPOSITORY_ROOT / "clients" / "python" / "README.md"]

_PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def documented_campaigns(readme: Path) -> list[Any]:
    """The ``send_campaign`` args the README's Python blocks show: literal values assigned to
    ``campaign``, ``send_campaign.delay(...)``'s literal keyword arguments, and the literal args
    of ``submit("send_campaign", ...)``."""
    campaigns = []
    for block in _PYTHON_BLOCK.findall(readme.read_text()):
        tree = ast.parse(block, filename=str(readme))
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == "campaign" for target in node.targets
            ):
                campaigns.append(ast.literal_eval(node.value))
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                function, receiver = node.func.attr, node.func.value
                if (
                    function == "delay"
                    and isinstance(receiver, ast.Name)
                    and receiver.id == "send_campaign"
                    and all(keyword.arg is not None for keyword in node.keywords)
                ):
                    campaigns.append(
                        {keyword.arg: ast.literal_eval(keyword.value) for keyword in node.keywords}
                    )
                elif (
                    function == "submit"
                    and len(node.args) >= 2
                    and isinstance(node.args[0], ast.Constant)
                    and node.args[0].value == "send_campaign"
                    and not isinstance(node.args[1], ast.Name)
                ):
                    campaigns.append(ast.literal_eval(node.args[1]))
    return campaigns


@pytest.fixture(scope="module")
def client_with_a_relay(celeritas_binary: Path) -> Iterator[celeritas.Client]:
    # Nothing listens there: the campaign task only checks that the relay is configured, and
    # the batches it queues are cancelled before they could send.
    relay = f"smtp://127.0.0.1:{free_port()}"
    with DevServer(celeritas_binary, environment={"CELERITAS_SMTP_URL": relay}) as server:
        with celeritas.Client(server.url) as client:
            yield client


@pytest.mark.parametrize("readme", READMES, ids=lambda path: str(path.relative_to(REPOSITORY_ROOT)))
def test_the_documented_send_campaign_args_are_accepted(
    readme: Path, client_with_a_relay: celeritas.Client
) -> None:
    campaigns = documented_campaigns(readme)
    assert campaigns, f"{readme} shows send_campaign's args as `campaign = {{...}}`"
    for campaign in campaigns:
        submitted = client_with_a_relay.submit("send_campaign", campaign)
        try:
            result = client_with_a_relay.result(submitted.task_id, timeout=30)
        except celeritas.TaskFailed as failure:
            pytest.fail(f"{readme}: send_campaign refused {campaign!r}: {failure}")
        finally:
            client_with_a_relay.cancel(submitted.task_id, terminate=True)
        assert result["campaign_id"] == campaign["campaign_id"]
        assert result["recipients"] == len(campaign["recipients"])
