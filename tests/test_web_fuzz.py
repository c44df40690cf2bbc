"""Property-based fuzzing of the JSON API from its own OpenAPI schema: never a 5xx.

Every operation of the schema is fuzzed, with a bounded number of cases each; the test also
fails if a known operation or a search filter drops out of the schema (it would go unfuzzed).
The cases are the same on every run, so CI is repeatable; set PIXSEEK_FUZZ_RANDOM=1 to draw new
ones (that is how a `~user` folder filter that gave a 500 was found).
"""

from __future__ import annotations

import os

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings

from pixseek.web.app import create_app
from tests.test_web_api import indexed, serve  # noqa: F401  (indexed is a fixture)

EXAMPLES_PER_OPERATION = 20
OPERATIONS = {
    "GET /api/health",
    "GET /api/status",
    "GET /api/search",
    "POST /api/search/image",
    "GET /api/images/{record}",
    "GET /api/images/{record}/similar",
    "GET /api/images/{record}/thumbnail",
    "GET /api/images/{record}/file",
    "POST /api/classify",
    "POST /api/classify/image",
    "GET /api/duplicates",
    "GET /api/duplicates/decisions",
    "POST /api/duplicates/decisions",
    "POST /api/duplicates/decisions/{number}/forget",
    "GET /api/duplicates/manifests",
    "POST /api/duplicates/undo",
}
FILTERS = {"folder", "since", "until", "format", "min_width", "min_height", "flagged"}
RANDOM = os.environ.get("PIXSEEK_FUZZ_RANDOM")


def test_api_never_answers_5xx(indexed):  # noqa: F811
    library, _, base = indexed
    app = create_app(library, thumbnail_dir=base / "thumbs-fuzz", max_upload_bytes=300_000)
    checked = []
    with serve(app) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        paths = httpx.get(f"{url}/openapi.json").json()["paths"]
        searches = [("/api/search", "get"), ("/api/search/image", "post")]
        for path, method in [*searches, ("/api/images/{record}/similar", "get")]:
            names = {parameter["name"] for parameter in paths[path][method]["parameters"]}
            assert names >= FILTERS | {"min_score", "sort"}, (path, names)
        for result in schema.get_all_operations():
            operation = result.ok()

            @given(case=operation.as_strategy())
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
                derandomize=RANDOM is None,
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
    assert set(checked) >= OPERATIONS, OPERATIONS - set(checked)
