"""Built-in plugin: the ``file``, ``s3``, ``hf`` and ``http(s)`` stores and the registry commands.

Registered through the same hooks as any third-party store plugin, so the CLI and the
``Registry`` facade find stores only through the catalog. Imports are deferred to the
factories: listing plugins never imports boto3 or huggingface_hub.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from adapterhub.hookspecs import hookimpl


def _file_store(url: str) -> Any:
    from adapterhub.registry.filestore import path_from_file_url
    from adapterhub.registry.local import LocalStore

    return LocalStore(path_from_file_url(url), url=url)


def _s3_store(url: str) -> Any:
    from adapterhub.registry.s3 import S3Store

    return S3Store(url)


def _http_store(url: str) -> Any:
    from adapterhub.registry.http import HttpStore

    return HttpStore(url)


def _hf_store(url: str) -> Any:
    from adapterhub.registry.hf import HFStore

    return HFStore(url)


@hookimpl
def adapterhub_register_stores(register: Callable[[str, Any], None]) -> None:
    register("file", _file_store)
    register("s3", _s3_store)
    register("hf", _hf_store)
    register("http", _http_store)  # an adapterhub hub's JSON API (registry/hub/api.py)
    register("https", _http_store)


@hookimpl
def adapterhub_register_commands(register: Callable[[Any], None]) -> None:
    from adapterhub.registry.cli import COMMANDS

    for cls in COMMANDS:
        register(cls())
