"""schemathesis against the running app's OpenAPI description, with each role's token and
with none: no 5xx, every response matches its schema and status list, and nothing but
health answers 200 without a token. Kept small (a few examples per operation and role)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from db.vocabulary import Priority, WebRole
from tests.web.conftest import WebRig
from tests.web.seed import add_study

EXAMPLES = 4
OPEN = {"/healthz", "/readyz"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

pytestmark = pytest.mark.slow


def test_api_holds_to_its_schema_for_every_role(web: WebRig) -> None:
    web.seed(lambda s: add_study(s, priority=Priority.CRITICAL, delivered_after_s=4.0,
                                 shadow_priority=Priority.URGENT))  # fmt: skip
    web.seed(lambda s: add_study(s, priority=None))
    schema = schemathesis.openapi.from_url(f"{web.url}/openapi.json")
    credentials = {None: {}} | {
        role: {"Authorization": f"Bearer {token}"} for role, token in web.tokens.items()
    }
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/api/studies", "/api/audit", "/metrics"}
    seen: dict[tuple[str, WebRole | None], set[int]] = {}

    def fuzz(operation: schemathesis.APIOperation) -> None:
        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def exercise(case: schemathesis.Case) -> None:
            for role, headers in credentials.items():
                response = case.call(base_url=web.url, headers=headers)
                case.validate_response(response, checks=CHECKS)
                seen.setdefault((operation.path, role), set()).add(response.status_code)
                if role is None and operation.path not in OPEN:
                    # Credentials are checked before any parameter: a plain 401.
                    assert response.status_code == 401, (operation.label, response.text[:200])

        exercise()

    for operation in operations:
        fuzz(operation)
    # The fuzz reached real answers, not only refusals.
    assert 200 in seen[("/api/studies", WebRole.RADIOLOGIST)]
    assert 200 in seen[("/api/audit", WebRole.AUDITOR)]
    assert seen[("/api/audit", WebRole.RADIOLOGIST)] <= {403, 422}
