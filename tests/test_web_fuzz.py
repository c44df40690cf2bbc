"""Property-based fuzzing of the JSON API from its own OpenAPI schema: never a 5xx."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings

from pixseek.web.app import create_app
from tests.test_web_api import indexed, serve  # noqa: F401  (indexed is a fixture)

EXAMPLES_PER_OPERATION = 20


def test_api_never_answers_5xx(indexed):  # noqa: F811
    library, _, base = indexed
    app = create_app(library, thumbnail_dir=base / "thumbs-fuzz", max_upload_bytes=300_000)
    checked = []
    with serve(app) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        for result in schema.get_all_operations():
            operation = result.ok()

            @given(case=operation.as_strategy())
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
            )
            def never_5xx(case) -> None:
                response = case.call(timeout=30)
                assert response.status_code < 500, (
                    case.method,
                    case.formatted_path,
                    response.text[:300],
                )

            never_5xx()
            checked.append(operation.label)
    assert len(checked) >= 8, checked
