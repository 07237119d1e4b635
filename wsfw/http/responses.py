"""The short plain-text answers wsfw gives itself (404, 403, 502, 504...), written one way."""

from __future__ import annotations


def plain(request, code: int, text: str, *, close: bool = False) -> bytes:
    """Set ``code`` and plain-text headers on ``request``; return the body to write or render.

    ``close`` ends the connection after this answer (after a policy refusal
    there is nothing more to say on it): the header tells the client, and the
    channel stops being persistent, so nothing it pipelined behind the refused
    request is read. twisted.web decides persistence from the *request's*
    headers only; the response's ``Connection: close`` alone would not do it.
    """
    body = (text + "\n").encode("utf-8")
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"content-length", str(len(body)).encode())
    if close:
        request.setHeader(b"connection", b"close")
        request.channel.persistent = False
    return body
