"""What the HTTP layer needs from whatever executes requests.

Two implementations: the in-process :class:`~adapterhub.serving.Engine` (``adapterhub
serve``) and :class:`~adapterhub.serving.ray.client.RayEngine` (``serve --ray``), which
forwards each request to an engine replica on Ray Serve. The routes only use what is
listed here, so one Starlette app serves both and a client cannot tell them apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from adapterhub.serving.handle import RequestHandle
    from adapterhub.serving.request import Request


class BaseView(Protocol):
    @property
    def name(self) -> str: ...


class EntryView(Protocol):
    """A loaded adapter, as ``/v1/models`` shows it."""

    @property
    def manifest(self) -> Any: ...

    @property
    def label(self) -> str: ...


class HostView(Protocol):
    """The part of :class:`~adapterhub.host.AdapterHost` the routes read."""

    @property
    def base(self) -> BaseView: ...

    def adapters(self) -> list[dict[str, Any]]: ...

    def entry(self, name: str) -> EntryView: ...

    def loaded(self) -> list[str]: ...


class EngineLike(Protocol):
    """Submit → a :class:`RequestHandle` (deltas, result, cancel); load/unload; stats."""

    @property
    def host(self) -> HostView: ...

    @property
    def healthy(self) -> bool: ...

    def start(self) -> Any: ...

    def close(self) -> None: ...

    def submit(self, request: Request) -> RequestHandle: ...

    def load(self, ref: str, timeout: float | None = None) -> str: ...

    def unload(self, name: str) -> None: ...

    def stats(self) -> dict[str, Any]: ...
