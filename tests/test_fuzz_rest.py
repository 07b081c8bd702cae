"""Schemathesis cases from the app's own OpenAPI schema against a live node: never a 5xx.

Each operation gets valid and invalid (negative) cases, sent with no token, a garbage one,
a user's or an admin's; every error must carry a stable code and nothing internal.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err

from taskcast.api.main import create_app
from taskcast.realtime.tokens import issue

from .liveweb import SECRET, running_web
from .processes import RedisServer, Web

# Another test's leftover background thread (a retry loop with jitter) may touch the global
# `random` while Hypothesis draws; that says nothing about the server under test.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]

EXAMPLES_PER_OPERATION = 60
LEAKS = ("traceback", 'file "', "redis", "taskcast:", "exception", "sql")
# The schema is built without starting the app: no settings, Redis or secret needed.
SCHEMA = schemathesis.openapi.from_dict(create_app().openapi())


def operations() -> dict[str, schemathesis.APIOperation[Any, Any, Any, Any]]:
    """Every operation of the schema by label; a part schemathesis cannot read is an error."""
    found = {}
    for result in SCHEMA.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        found[result.ok().label] = result.ok()
    return found


OPERATIONS = operations()
CREDENTIALS = {
    "none": None,
    "garbage": "Bearer not-a-token",
    "user": f"Bearer {issue(SECRET, 'fuzz-user', ttl=3600 * 24)}",
    "admin": f"Bearer {issue(SECRET, 'fuzz-admin', ['admin'], ttl=3600 * 24)}",
}


@pytest.fixture(scope="module")
def web(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    with running_web(redis_server, tmp_path_factory.mktemp("fuzzrest")) as node:
        yield node


def check_error_body(response: schemathesis.Response) -> None:
    """A 4xx is JSON with a stable string code and no internals."""
    if response.status_code < 400:
        return
    body: Any = response.json()
    assert isinstance(body["error"]["code"], str), body
    assert body["error"]["code"].replace("_", "").isalpha(), body
    text = response.text.lower()
    for leak in LEAKS:
        assert leak not in text, (leak, response.text[:500])


def test_schema_lists_every_rest_route() -> None:
    """The fuzzed schema covers the contract's REST routes (nothing silently skipped)."""
    expected = {
        "POST /orders",
        "POST /inventory/imports",
        "GET /tasks/{task_id}",
        "POST /tasks/{task_id}/cancel",
        "GET /ws/stats",
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
    }
    assert expected <= set(OPERATIONS)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_operation_never_fails_on_the_server(web: Web, label: str) -> None:
    """Valid and invalid cases of this operation, any credentials: no 5xx, coded errors only."""
    operation = OPERATIONS[label]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )
    statuses: set[int] = set()

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases, credential=st.sampled_from(sorted(CREDENTIALS)))
    def one_case(case: schemathesis.Case[Any], credential: str) -> None:
        value = CREDENTIALS[credential]
        headers = {"Authorization": value} if value is not None else None
        response = case.call(base_url=web.url, headers=headers, timeout=10)
        statuses.add(response.status_code)
        case.validate_response(response, checks=[not_a_server_error])
        check_error_body(response)

    one_case()
    assert statuses
    assert max(statuses) < 500
    assert web.alive()
