"""An agent using the shop through the gateway's MCP endpoint, with the
official MCP Python SDK (`mcp` on PyPI), driven by tests/e2e/mcp.rs.

Usage: mcp_client.py GATEWAY_BASE_URL MODE [MESH MESH_TOML]
MODE is the SDK's connect mode: "legacy" (initialize, Mcp-Session-Id: the
2025-11-25 protocol) or "2026-07-28" (stateless, no handshake); or "stdio":
`MESH mcp --stdio --config MESH_TOML` launched by the SDK, signed in with a
token in MESH_MCP_TOKEN; or "oauth": the SDK signs its user in by itself
(the gateway's authorization server: discovery, dynamic registration, the
login page, PKCE), with this script as the user's browser.

Every check asserts here; the last line printed is a JSON summary that the
Rust side checks again.
"""

import asyncio
import base64
import hashlib
import html
import json
import re
import sys
import uuid
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
import jsonschema
from mcp import Client, StdioServerParameters
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientMetadata

BASE, MODE = sys.argv[1], sys.argv[2]
MCP = f"{BASE}/mcp"
summary = {"mode": MODE}


def client(token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = httpx2.AsyncClient(headers=headers, timeout=30)
    return Client(streamable_http_client(MCP, http_client=http), mode=MODE)


def text(result):
    return " ".join(c.text for c in result.content if getattr(c, "type", "") == "text")


async def register(http, name):
    email = f"{name}-{uuid.uuid4().hex[:8]}@example.test"
    r = await http.post(f"{BASE}/v1/users", json={"email": email, "password": "correct horse", "displayName": name})
    assert r.status_code == 200, r.text
    user = r.json()["user"]
    r = await http.post(f"{BASE}/v1/login", json={"email": email, "password": "correct horse"})
    assert r.status_code == 200, r.text
    return user["id"], r.json()["accessToken"]


async def anonymous():
    async with client() as agent:
        summary["protocol"] = agent.protocol_version
        tools = (await agent.list_tools()).tools
        names = sorted(t.name for t in tools)
        summary["anonymous_tools"] = names
        assert "catalog_list_products" in names and "cart_checkout" not in names, names
        for tool in tools:
            jsonschema.Draft202012Validator.check_schema(tool.input_schema)
            if tool.output_schema is not None:
                jsonschema.Draft202012Validator.check_schema(tool.output_schema)
            assert "$ref" not in json.dumps(tool.input_schema), tool.name
        listing = next(t for t in tools if t.name == "catalog_list_products")
        props = listing.input_schema["properties"]
        assert props["pageSize"]["type"] == "integer", props
        assert "default of 20" in props["pageSize"]["description"], props
        assert listing.annotations.read_only_hint is True, listing.annotations
        assert "One page of products" in listing.description, listing.description
        price = listing.output_schema["properties"]["products"]["items"]["properties"]["price"]
        summary["price_schema"] = price

        page = await agent.call_tool("catalog_list_products", {"pageSize": 5})
        assert not page.is_error, text(page)
        products = page.structured_content["products"]
        assert len(products) == 5, products
        assert json.loads(text(page)) == page.structured_content
        jsonschema.validate(page.structured_content, listing.output_schema)
        summary["products"] = [p["id"] for p in products]

        missing = await agent.call_tool("catalog_get_product", {"productId": "no-such-book"})
        assert missing.is_error and text(missing).startswith("NOT_FOUND"), text(missing)
        summary["not_found"] = text(missing)

        wrong = await agent.call_tool("catalog_list_products", {"pageSize": "many"})
        assert wrong.is_error and "pageSize" in text(wrong), text(wrong)
        summary["bad_arguments"] = text(wrong)

        progress = []

        async def on_progress(done, total, message):
            progress.append(json.loads(message))

        watched = summary["products"][:2]
        stream = await agent.call_tool("catalog_watch_products", {"productIds": watched}, progress_callback=on_progress)
        assert not stream.is_error, text(stream)
        messages = stream.structured_content["messages"]
        assert [m["product"]["id"] for m in messages[:2]] == watched, messages
        assert progress == messages, (progress, messages)
        summary["stream_progress"] = len(progress)

        # A watch of one product sends one message, then waits (the test's
        # window is 60 s): the agent gives up after the first message.
        first = anyio.Event()

        async def on_first(done, total, message):
            first.set()

        async def watch():
            await agent.call_tool("catalog_watch_products", {"productIds": watched[:1]}, progress_callback=on_first)

        with anyio.fail_after(20):
            async with anyio.create_task_group() as group:
                group.start_soon(watch)
                await first.wait()
                group.cancel_scope.cancel()
        summary["cancelled"] = True


async def signed_in():
    async with httpx2.AsyncClient(timeout=30) as http:
        me, token = await register(http, "agent")
        other, _ = await register(http, "someone-else")
    async with client(token) as agent:
        tools = {t.name: t for t in (await agent.list_tools()).tools}
        summary["signed_in_tools"] = sorted(tools)
        assert "cart_checkout" in tools and "catalog_update_product" not in tools, sorted(tools)
        assert tools["cart_remove_item"].annotations.destructive_hint is True
        assert tools["cart_remove_item"].annotations.idempotent_hint is True
        assert tools["cart_checkout"].annotations.read_only_hint is False

        product = summary["products"][0]
        added = await agent.call_tool("cart_add_item", {"userId": "me", "productId": product, "quantity": 2})
        assert not added.is_error, text(added)
        assert added.structured_content["userId"] == me, added.structured_content

        # A change of preferences shows in the very next call: prices in euros.
        shown = await agent.call_tool("catalog_get_product", {"productId": product})
        assert shown.structured_content["price"]["currencyCode"] == "USD", shown.structured_content
        changed = await agent.call_tool(
            "user_update_preferences", {"userId": "me", "preferences": {"locale": "de-DE", "currency": "EUR"}}
        )
        assert not changed.is_error, text(changed)
        shown = await agent.call_tool("catalog_get_product", {"productId": product})
        assert shown.structured_content["price"]["currencyCode"] == "EUR", shown.structured_content
        summary["price_after_preferences"] = shown.structured_content["price"]

        # An agent that retries (here: twice at once, then once more) is charged once.
        first, second = await asyncio.gather(
            agent.call_tool("cart_checkout", {"userId": "me"}),
            agent.call_tool("cart_checkout", {"userId": "me"}),
        )
        again = await agent.call_tool("cart_checkout", {"userId": "me"})
        outcomes = [r for r in (first, second, again) if not r.is_error]
        order_ids = {r.structured_content["order"]["id"] for r in outcomes}
        assert len(order_ids) == 1, [text(r) for r in (first, second, again)]
        summary["order_total"] = outcomes[0].structured_content["order"]["total"]
        assert again.is_error and "FAILED_PRECONDITION" in text(again), text(again)
        orders = await agent.call_tool("payment_list_orders", {"userId": "me"})
        assert not orders.is_error, text(orders)
        summary["orders"] = len(orders.structured_content["orders"])
        summary["checkout_results"] = [("error: " + text(r)) if r.is_error else "order" for r in (first, second, again)]

        theirs = await agent.call_tool("cart_get_cart", {"userId": other})
        assert theirs.is_error and "PERMISSION_DENIED" in text(theirs), text(theirs)
        summary["other_users_cart"] = text(theirs)
    return token


async def on_the_wire(token):
    """What the SDK hides: the HTTP answers of the transport and of auth."""
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": "2026-07-28",
    }
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "cart_get_cart", "arguments": {"userId": "me"}}}
    async with httpx2.AsyncClient(timeout=30) as http:
        r = await http.post(MCP, json=call, headers=headers)
        assert r.status_code == 401, (r.status_code, r.text)
        challenge = r.headers["www-authenticate"]
        assert 'resource_metadata="' in challenge, challenge
        summary["missing_token"] = challenge
        metadata_url = challenge.split('resource_metadata="')[1].split('"')[0]
        metadata = (await http.get(metadata_url)).json()
        assert metadata["resource"].endswith("/mcp"), metadata
        summary["metadata"] = metadata

        r = await http.post(MCP, json=call, headers={**headers, "Authorization": "Bearer not.a.token"})
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"], r.headers
        summary["bad_token"] = r.headers["www-authenticate"]

        admin_only = {**call, "params": {"name": "catalog_update_product", "arguments": {"productId": "x"}}}
        r = await http.post(MCP, json=admin_only, headers={**headers, "Authorization": f"Bearer {token}"})
        assert r.status_code == 403 and 'error="insufficient_scope"' in r.headers["www-authenticate"], r.headers
        summary["insufficient_scope"] = r.headers["www-authenticate"]

        r = await http.post(MCP, json=call, headers={**headers, "Origin": "http://evil.example"})
        assert r.status_code == 403, (r.status_code, r.text)
        summary["bad_origin"] = r.status_code

        listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
        r = await http.post(MCP, json=listing, headers={**headers, "MCP-Protocol-Version": "1999-01-01"})
        assert r.status_code == 400, (r.status_code, r.text)
        summary["bad_version"] = r.status_code

        meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
        unknown = {"jsonrpc": "2.0", "id": 3, "method": "resources/list", "params": {"_meta": meta}}
        r = await http.post(MCP, json=unknown, headers={**headers, "Mcp-Method": "resources/list"})
        body = r.text
        if r.headers.get("content-type", "").startswith("text/event-stream"):
            body = next(line[6:] for line in body.splitlines() if line.startswith("data: ") and len(line) > 6)
        summary["unknown_method"] = [r.status_code, json.loads(body)["error"]["code"]]
        assert summary["unknown_method"] == [404, -32601], summary["unknown_method"]

        r = await http.post(MCP, json=listing, headers={**headers, "Accept": "application/json"})
        assert r.status_code == 406, (r.status_code, r.text)
        summary["bad_accept"] = r.status_code


async def stdio(mesh, config):
    async with httpx2.AsyncClient(timeout=30) as http:
        me, token = await register(http, "desktop")
    server = StdioServerParameters(
        command=mesh,
        args=["mcp", "--stdio", "--config", config, "--via", "demo"],
        env={"MESH_MCP_TOKEN": token},
    )
    async with Client(server, mode="legacy") as agent:
        summary["protocol"] = agent.protocol_version
        names = sorted(t.name for t in (await agent.list_tools()).tools)
        assert "cart_get_cart" in names and "catalog_update_product" not in names, names
        summary["stdio_tools"] = len(names)
        page = await agent.call_tool("catalog_list_products", {"pageSize": 3})
        assert not page.is_error and len(page.structured_content["products"]) == 3, text(page)
        cart = await agent.call_tool("cart_get_cart", {"userId": "me"})
        assert not cart.is_error and cart.structured_content["userId"] == me, text(cart)
        summary["stdio_cart_user"] = cart.structured_content["userId"] == me
    print(json.dumps(summary))


class MemoryStorage:
    """The SDK's TokenStorage, in memory."""

    def __init__(self):
        self.tokens, self.client_info = None, None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info):
        self.client_info = client_info


async def oauth():
    email = f"oauth-{uuid.uuid4().hex[:8]}@example.test"
    async with httpx2.AsyncClient(timeout=30) as http:
        r = await http.post(f"{BASE}/v1/users", json={"email": email, "password": "correct horse", "displayName": "oauth"})
        assert r.status_code == 200, r.text
        me = r.json()["user"]["id"]
    redirect = {}

    async def as_the_users_browser(url):
        """Opens the login page, signs in (once wrongly), and reads the redirect without following it."""
        async with httpx2.AsyncClient(timeout=30, follow_redirects=False) as browser:
            page = await browser.get(url)
            assert page.status_code == 200 and "<form" in page.text, (page.status_code, page.text)
            assert "meshwork-test-agent" in page.text, page.text
            fields = {k: html.unescape(v) for k, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text)}
            form_url = f"{BASE}/oauth/authorize"
            wrong = await browser.post(form_url, data={**fields, "email": email, "password": "not it"})
            assert wrong.status_code == 401 and "Wrong email or password" in wrong.text, wrong.status_code
            signed_in = await browser.post(form_url, data={**fields, "email": email, "password": "correct horse"})
            assert signed_in.status_code == 302, (signed_in.status_code, signed_in.text)
            location = signed_in.headers["location"]
            assert location.startswith("http://127.0.0.1:9/callback?"), location
            query = parse_qs(urlsplit(location).query)
            redirect["code"], redirect["state"] = query["code"][0], query["state"][0]

    async def callback():
        return AuthorizationCodeResult(code=redirect["code"], state=redirect["state"])

    storage = MemoryStorage()
    metadata = OAuthClientMetadata(
        client_name="meshwork-test-agent",
        redirect_uris=["http://127.0.0.1:9/callback"],
        grant_types=["authorization_code"],
        response_types=["code"],
        token_endpoint_auth_method="none",
    )
    provider = OAuthClientProvider(MCP, metadata, storage, as_the_users_browser, callback)
    http = httpx2.AsyncClient(auth=provider, timeout=30)
    async with Client(streamable_http_client(MCP, http_client=http), mode="2026-07-28") as agent:
        summary["protocol"] = agent.protocol_version
        # Anonymous until a tool needs the user: then 401, and the SDK signs in.
        cart = await agent.call_tool("cart_get_cart", {"userId": "me"})
        assert not cart.is_error and cart.structured_content["userId"] == me, text(cart)
        names = sorted(t.name for t in (await agent.list_tools()).tools)
        assert "cart_checkout" in names, names
    token = storage.tokens.access_token
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    summary["oauth_audience"] = claims["aud"]
    summary["oauth_user"] = claims["sub"] == me
    summary["oauth_client"] = storage.client_info.client_id
    async with httpx2.AsyncClient(timeout=30) as plain:
        # The token is for the MCP resource: the REST API, another audience, refuses it.
        r = await plain.get(f"{BASE}/v1/users/me/cart", headers={"Authorization": f"Bearer {token}"})
        summary["oauth_token_at_rest"] = r.status_code
        # The authorization server issues tokens for its resource only.
        other = {"grant_type": "authorization_code", "code": "x", "code_verifier": "x" * 43,
                 "client_id": storage.client_info.client_id, "redirect_uri": "http://127.0.0.1:9/callback",
                 "resource": "http://elsewhere.example/mcp"}
        r = await plain.post(f"{BASE}/oauth/token", data=other)
        summary["oauth_other_resource"] = [r.status_code, r.json()["error"]]
        # A code is used once: the SDK's was, so replaying it is invalid_grant.
        replay = {**other, "resource": MCP, "code": redirect["code"]}
        r = await plain.post(f"{BASE}/oauth/token", data=replay)
        summary["oauth_replay"] = [r.status_code, r.json()["error"]]
        summary["oauth_scope"] = claims.get("scope")
        summary["read_only"] = await read_only_token(plain, email)
    print(json.dumps(summary))


async def read_only_token(http, email):
    """The flow by hand for a token with scope shop:read only: it reads the
    cart, and checking out is 403 insufficient_scope naming shop:write."""
    redirect_uri = "http://127.0.0.1:9/callback"
    r = await http.post(f"{BASE}/oauth/register", json={"client_name": "reader", "redirect_uris": [redirect_uri]})
    assert r.status_code == 201, r.text
    client_id = r.json()["client_id"]
    verifier = base64.urlsafe_b64encode(uuid.uuid4().bytes * 2).decode().rstrip("=")
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "state": "s1",
              "code_challenge": challenge, "code_challenge_method": "S256", "resource": MCP, "scope": "shop:read"}
    page = await http.get(f"{BASE}/oauth/authorize", params=params)
    assert page.status_code == 200, page.text
    signed_in = await http.post(f"{BASE}/oauth/authorize", data={**params, "email": email, "password": "correct horse"})
    assert signed_in.status_code == 302, (signed_in.status_code, signed_in.text)
    code = parse_qs(urlsplit(signed_in.headers["location"]).query)["code"][0]
    r = await http.post(f"{BASE}/oauth/token", data={"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
                                                     "client_id": client_id, "redirect_uri": redirect_uri, "resource": MCP})
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
               "MCP-Protocol-Version": "2026-07-28", "Authorization": f"Bearer {token}"}
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}

    def call(name):
        return {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": name, "arguments": {"userId": "me"}, "_meta": meta}}

    read = await http.post(MCP, json=call("cart_get_cart"), headers={**headers, "Mcp-Method": "tools/call", "Mcp-Name": "cart_get_cart"})
    write = await http.post(MCP, json=call("cart_checkout"), headers={**headers, "Mcp-Method": "tools/call", "Mcp-Name": "cart_checkout"})
    return {"read": read.status_code, "write": write.status_code, "challenge": write.headers.get("www-authenticate", "")}


async def main():
    # A bound of its own, under the Rust side's, so that a hang ends with a
    # traceback naming the step that waited.
    with anyio.fail_after(150):
        await run()


async def run():
    if MODE == "stdio":
        await stdio(sys.argv[3], sys.argv[4])
        return
    if MODE == "oauth":
        await oauth()
        return
    # A token taken first, for the Rust side to try once it has expired.
    async with httpx2.AsyncClient(timeout=30) as http:
        _, summary["early_token"] = await register(http, "early")
    await anonymous()
    token = await signed_in()
    await on_the_wire(token)
    print(json.dumps(summary))


asyncio.run(main())
