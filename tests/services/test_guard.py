"""Client errors become one line; status codes say whose fault it is."""

from __future__ import annotations

import json

from services.guard import one_line_error


def test_pydantic_errors_become_field_and_message_with_422() -> None:
    body = json.dumps(
        {
            "error": "2 validation errors for Input",
            "detail": [
                {"type": "less_than_equal", "loc": ["k"], "msg": "Input should be <= 1000"},
                {
                    "type": "string_type",
                    "loc": ["user_id"],
                    "msg": "Input should be a valid string",
                },
            ],
        }
    )
    assert one_line_error(400, body.encode()) == (422, "k: Input should be <= 1000 (+1 more)")


def test_unreadable_json_is_a_400() -> None:
    body = json.dumps({"error": "x", "detail": [{"type": "json_invalid", "loc": [], "msg": "bad"}]})
    assert one_line_error(400, body.encode()) == (400, "request body is not valid JSON")


def test_bentoml_list_wrapped_errors_are_unwrapped() -> None:
    assert one_line_error(404, b'[{"error": "no such thing\\nmore"}]') == (404, "no such thing")
