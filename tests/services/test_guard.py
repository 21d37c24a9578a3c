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


# --- the middleware over a real Starlette app, driven through httpx' ASGI transport -----
def _app(**guard: object):
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from services.guard import GuardMiddleware

    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"size": len(await request.body())})

    async def ok(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    inner = Starlette(routes=[Route("/recommend", echo, methods=["POST"]), Route("/readyz", ok)])
    app = GuardMiddleware(inner, **guard)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


def _run(coro):
    import asyncio

    return asyncio.run(coro)


def test_unknown_paths_are_404_before_reaching_the_app() -> None:
    async def go():
        async with _app(public_paths=frozenset({"/recommend"})) as c:
            return (await c.get("/x" * 50)).status_code, (await c.post("/recommend")).status_code

    assert _run(go()) == (404, 200)


def test_bodies_over_the_limit_are_413_by_header_and_by_stream() -> None:
    async def chunks():
        for _ in range(10):
            yield b"x" * 1000

    async def go():
        async with _app(max_body_bytes=4096) as c:
            small = await c.post("/recommend", content=b"x" * 4096)
            big = await c.post("/recommend", content=b"x" * 5000)
            streamed = await c.post("/recommend", content=chunks())  # no content-length
            return small, big, streamed

    small, big, streamed = _run(go())
    assert small.status_code == 200 and small.json() == {"size": 4096}
    assert big.status_code == 413 and "4096 bytes" in big.json()["error"]
    assert streamed.status_code == 413


def test_required_auth_without_a_key_fails_closed_but_probes_answer() -> None:
    async def go():
        async with _app(api_key=None, auth_required=True) as c:
            return (await c.post("/recommend")).status_code, (await c.get("/readyz")).status_code

    assert _run(go()) == (503, 200)
