"""``POST /v1/completions`` and ``POST /v1/chat/completions``: one engine request each.

A non-stream call waits for the completion; a stream answers server-sent events, one
write per engine wake-up holding every chunk produced since the last one
(:meth:`RequestHandle.batches`), so a writer that falls behind catches up in one send.
An adapter that is not loaded yet is loaded by the engine in the background; its errors
arrive on the handle and get their own status for a non-stream call, and for a stream
before its first chunk (after that, an ``error`` event ends the stream). A client that
disconnects cancels its request: the row leaves the batch at the next step.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response, StreamingResponse

from adapterhub import logs
from adapterhub.access import note, request_id
from adapterhub.errors import AdapterhubError, EngineClosedError
from adapterhub.serving.http.errors import ApiError, api_error, shutting_down
from adapterhub.serving.http.formatting import DONE, Call, sse, usage
from adapterhub.serving.http.keys import ANONYMOUS, Principal
from adapterhub.serving.http.parsing import (
    ClientGone,
    get_field,
    messages_of,
    parse_json,
    prompts_of,
    read_body,
    refuse_unsupported,
    sampling,
)
from adapterhub.serving.request import Completion, Delta, make_request

if TYPE_CHECKING:
    from adapterhub.serving.handle import RequestHandle
    from adapterhub.serving.http.state import ServerState


@dataclass
class _Prepared:
    handles: list[RequestHandle]
    model: str
    stream: bool
    include_usage: bool
    want_logprobs: bool
    echo: bool


def _prepare(state: ServerState, principal: Principal, raw: bytes, kind: str, rid: str | None) -> _Prepared:
    """Everything between the body's bytes and queued engine requests: parse, check,
    render each prompt and tokenize it (in ``submit``). Runs in a worker thread: a
    100,000-token prompt takes a while to tokenize, and no other stream may wait for it."""
    body = parse_json(raw)
    asked = body.get("model")
    model = asked if isinstance(asked, str) else "-"
    note(model=model)
    adapter = state.adapter_for(principal, asked)
    refuse_unsupported(body, kind)
    params = sampling(body, kind)
    prompts: list[Any] = [messages_of(body)] if kind == "chat" else list(prompts_of(body))
    if logs.LOG_PROMPTS:
        note(prompt=prompts[0] if len(prompts) == 1 else prompts)
    stream = get_field(body, "stream", (bool,), False)
    echo = kind == "completions" and get_field(body, "echo", (bool,), False)
    if stream and len(prompts) > 1:
        raise ApiError(400, "stream takes one prompt (send one request per prompt, or stream=false)", param="prompt")
    if stream and echo:
        raise ApiError(400, "echo is supported without stream only", param="echo")
    opts = body.get("stream_options")
    include_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
    handles: list[RequestHandle] = []
    try:
        for i, prompt in enumerate(prompts):
            one_id = rid if len(prompts) == 1 or rid is None else f"{rid}.{i}"
            req = make_request(prompt, adapter, raw=kind == "completions", request_id=one_id, echo=echo, **params)
            handles.append(state.engine.submit(req))
    except (AdapterhubError, ValueError) as exc:
        for h in handles:  # all or nothing: the prompts queued before the bad one leave
            h.cancel()
        err = api_error(exc, model)
        if err.code == "context_length_exceeded" and kind == "completions":
            err.param = "prompt"
        raise err from None
    return _Prepared(handles, model, stream, include_usage, bool(params.get("logprobs")), echo)


async def complete(state: ServerState, request: HttpRequest, kind: str) -> Response:
    """Answer one completion call of ``kind`` ("completions" or "chat")."""
    principal = ANONYMOUS
    try:
        if state.draining:
            raise shutting_down()
        principal = state.principal(request)
        note(key=principal.name)
        raw = await read_body(request, state.limits)
        p = await run_in_threadpool(_prepare, state, principal, raw, kind, request_id())
    except ClientGone:
        state.metrics.requests.labels(kind, "499", "-", principal.name).inc()
        return Response(status_code=499)
    except ApiError as e:
        state.metrics.requests.labels(kind, str(e.status), "-", principal.name).inc()
        return e.response()
    calls = [Call(state, kind, p.model, principal, h, p.want_logprobs, echo=p.echo) for h in p.handles]
    if p.stream:
        return await _stream(calls[0], p.include_usage)
    return await _whole(calls, request)


async def _collect(call: Call) -> Completion:
    async for batch in call.handle.batches():
        for d in batch:
            call.observe(d)
    return call.handle.result(timeout=0)


async def _whole(calls: list[Call], request: HttpRequest) -> Response:
    """One JSON answer: a choice per prompt, in prompt order (``index``)."""
    handles = [c.handle for c in calls]
    watcher = asyncio.create_task(_cancel_on_disconnect(request, handles))
    try:
        done = await asyncio.gather(*(_collect(c) for c in calls))
    except BaseException as exc:
        for h in handles:
            if not h.done:
                h.cancel()
        if not isinstance(exc, Exception):
            raise
        err = api_error(exc, calls[0].model)
        calls[0].count(err.status, None)
        return err.response()
    finally:
        watcher.cancel()
    if any(c.finish_reason == "cancelled" for c in done):
        if any(h.cancelled for h in handles):  # the client went away
            calls[0].count(499, done[0])
            return Response(status_code=499)
        err = shutting_down()  # cut short by a shutdown: not an answer
        calls[0].count(err.status, done[0])
        return err.response()
    for call, c in zip(calls, done, strict=True):
        call.count(200, c)
    body = calls[0].body(done[0])
    if len(calls) > 1:
        body["choices"] = [call.body(c, index=i)["choices"][0] for i, (call, c) in enumerate(zip(calls, done, strict=True))]
        body["usage"] = usage(sum(c.prompt_tokens for c in done), sum(c.completion_tokens for c in done))
    return JSONResponse(body)


async def _cancel_on_disconnect(request: HttpRequest, handles: list[RequestHandle]) -> None:
    """Cancel the handles when the client of a non-stream request disconnects (the body is
    read already, so the next ASGI message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            for h in handles:
                h.cancel()
            return


async def _stream(call: Call, include_usage: bool) -> Response:
    handle = call.handle
    it = cast("AsyncGenerator[list[Delta], None]", handle.batches())
    # Wait for the first deltas (the adapter is loaded and the prompt prefilled by then),
    # so that a failing load still gets its own status instead of a 200 stream.
    try:
        first: list[Delta] | None = await it.__anext__()
        if first and first[-1].finish_reason == "cancelled" and not handle.cancelled:
            raise EngineClosedError("the server is shutting down")  # nothing streamed yet: a 503
    except StopAsyncIteration:
        first = None
    except BaseException as exc:
        if not handle.done:
            handle.cancel()
        await it.aclose()
        if not isinstance(exc, Exception):
            raise
        err = api_error(exc, call.model)
        call.count(err.status, None)
        return err.response()

    async def events() -> AsyncIterator[bytes]:
        writer = _ChunkWriter(call, include_usage)
        status = 200
        try:
            batch = first
            while batch is not None:
                out = writer.frames(batch)
                if writer.completion is not None:  # the last chunk: [DONE] goes in the same write
                    yield out + DONE
                    return
                if out:
                    yield out
                try:
                    batch = await it.__anext__()
                except StopAsyncIteration:
                    batch = None
            yield DONE
        except Exception as exc:  # an error after the first chunk: an error event ends the stream
            err = api_error(exc, call.model)
            status = err.status
            yield sse(err.body()) + DONE
        finally:
            # Reached on a client disconnect too (the task is cancelled): free the row.
            if not handle.done:
                handle.cancel()
                status = 499
            await it.aclose()
            call.count(status, writer.completion)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


class _ChunkWriter:
    """Deltas into SSE frames, keeping the chunk count and text offset of one stream."""

    def __init__(self, call: Call, include_usage: bool) -> None:
        self.call, self.include_usage = call, include_usage
        self.n = self.offset = 0
        self.completion: Completion | None = None

    def frames(self, batch: list[Delta]) -> bytes:
        call, out = self.call, []
        for d in batch:
            call.observe(d)
            if d.finish_reason == "cancelled" and not call.handle.cancelled:
                # The server cut the stream short (shutdown): an error event, not a normal end.
                raise EngineClosedError("the server is shutting down")
            if d.finish_reason is not None:
                self.completion = call.handle.result(timeout=0)  # published with the last delta
            chunk = call.chunk(d, self.n == 0, self.offset)
            self.offset += len(d.text)
            if self.completion is not None:
                chunk["model"] = call.label(self.completion)
                use = usage(self.completion.prompt_tokens, self.completion.completion_tokens)
                if not self.include_usage:
                    chunk["usage"] = use
                out.append(sse(chunk))
                if self.include_usage:
                    out.append(sse({**chunk, "choices": [], "usage": use}))
            elif d.text or d.logprobs or self.n == 0:
                out.append(sse(chunk))
            self.n += 1
        return b"".join(out)
