"""engage: user profile updates, end to end over stdio against the double."""

import pytest

from tests.conftest import TOKEN, error_text, stdio_client, structured

pytestmark = pytest.mark.asyncio


async def test_set_sends_one_update_with_token_and_no_http_auth(double, env):
    async with stdio_client(env) as client:
        result = await client.call_tool("engage", {"operation": "set", "distinct_id": "u42", "properties": {"plan": "pro"}})
    data = structured(result)
    assert data["updates_sent"] == 1
    (request,) = double.received("/engage")
    assert request.method == "POST"
    assert request.query["verbose"] == "1"
    assert "authorization" not in request.headers
    assert request.json() == [{"$token": TOKEN, "$distinct_id": "u42", "$set": {"plan": "pro"}, "$ip": "0"}]
    assert double.profiles["u42"] == {"plan": "pro"}


async def test_unknown_argument_is_rejected_before_any_request(double, env):
    async with stdio_client(env) as client:
        result = await client.call_tool("engage", {"operation": "set", "distinct_id": "u1", "properties": {"a": 1}, "bogus": 1})
    text = error_text(result)
    assert "bogus" in text and "unknown argument" in text
    assert double.received() == []
