"""A GraphQL server with subscriptions over graphql-ws (``graphql-transport-ws``): strawberry on uvicorn.

    python -m tests.peers.gql_server [PORT]     # PORT 0 (default): a free one

``/graphql`` serves queries over HTTP and subscriptions over WebSocket, speaking only
the ``graphql-transport-ws`` subprotocol (the graphql-ws library's protocol), so a
client that gets a connection has had it negotiated. Schema:

- ``subscription { count(upTo: Int!) }`` streams 1..upTo;
- ``subscription { search(term: String!) }`` streams three results for ``term``;
- ``query { seen }`` lists every operation the server executed, as
  ``"<operation type> <variables as JSON>"``: the oracle that an injection in
  ``variables`` never reached it.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncGenerator

import strawberry
from strawberry.asgi import GraphQL
from strawberry.extensions import SchemaExtension
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from tests.peers import serve

seen: list[str] = []


class Recorder(SchemaExtension):
    """Records every operation the server executes (queries and subscriptions), with its variables."""

    def on_operation(self):
        context = self.execution_context
        yield
        operation = context.operation_type.value if context.operation_type else "?"
        seen.append(f"{operation} {json.dumps(context.variables or {}, sort_keys=True)}")


@strawberry.type
class Query:
    @strawberry.field
    def seen(self) -> list[str]:
        return list(seen)


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def count(self, up_to: int) -> AsyncGenerator[int, None]:
        for i in range(1, up_to + 1):
            yield i
            await asyncio.sleep(0.01)

    @strawberry.subscription
    async def search(self, term: str) -> AsyncGenerator[str, None]:
        for i in range(3):
            yield f"result {i} for {term}"
            await asyncio.sleep(0.01)


schema = strawberry.Schema(query=Query, subscription=Subscription, extensions=[Recorder])
app = GraphQL(schema, subscription_protocols=[GRAPHQL_TRANSPORT_WS_PROTOCOL], graphql_ide=None)

if __name__ == "__main__":
    serve(app, "graphql server", port=int(sys.argv[1]) if len(sys.argv) > 1 else 0)
