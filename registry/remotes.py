"""Named remotes (``adapterhub remote add team s3://bucket/prefix``) and store URLs.

Remotes live in ``adapterhub.paths.config_file()`` (JSON) under ``"remotes"``; other
keys in that file are preserved. A store is chosen by URL scheme through the catalog
(``adapterhub_register_stores``), so third-party store plugins work with ``--to``/
``--from`` like the built-ins. A bare path (``/mnt/share/registry``) means ``file://``.

Store options travel in the URL's query string so one string fully describes a remote:
``s3://bucket/prefix?endpoint_url=http://127.0.0.1:8333&region=us-east-1``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from adapterhub.registry.atomic import atomic_write

from adapterhub import paths
from adapterhub.errors import ConfigError, UnknownNameError

if TYPE_CHECKING:  # the protocols package imports pydantic; typing only
    from adapterhub.protocols.store import Store

_REMOTE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
_SCHEME = re.compile(r"([a-z][a-z0-9+.-]*)://")


def _load() -> dict[str, Any]:
    path = paths.config_file()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable config ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: config must be a JSON object")
    return data


def remotes() -> dict[str, str]:
    raw = _load().get("remotes", {})
    if not isinstance(raw, dict):
        raise ConfigError(f"{paths.config_file()}: 'remotes' must be an object of name -> URL")
    return {str(k): str(v) for k, v in raw.items()}


def normalise_url(url: str) -> str:
    """Validate a store URL; bare paths become ``file://`` URLs."""
    if not isinstance(url, str) or not url or "\x00" in url or any(ord(c) < 32 for c in url):
        raise ConfigError(f"invalid store URL {url!r}")
    if _SCHEME.match(url):
        return url
    if url.startswith(("/", "~", ".")):
        return Path(url).expanduser().absolute().as_uri()
    raise ConfigError(f"invalid store URL {url!r}: expected s3://..., hf://..., https://..., file:///... or a path (or a remote name)")


def add_remote(name: str, url: str) -> str:
    if not _REMOTE_NAME.match(name):
        raise ConfigError(f"invalid remote name {name!r}: letters, digits, '_' and '-', at most 64")
    url = normalise_url(url)
    scheme_of(url)
    data = _load()
    table = data.setdefault("remotes", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{paths.config_file()}: 'remotes' must be an object")
    table[name] = url
    path = paths.config_file()
    atomic_write(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
    return url


def remove_remote(name: str) -> None:
    data = _load()
    table = data.get("remotes", {})
    if not isinstance(table, dict) or name not in table:
        raise UnknownNameError(f"no remote named {name!r} (see `adapterhub remote ls`)")
    del table[name]
    atomic_write(paths.config_file(), (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def resolve_url(url_or_remote: str) -> str:
    """A remote name → its URL; a URL or path → itself (normalised)."""
    table = remotes()
    if url_or_remote in table:
        return table[url_or_remote]
    if _REMOTE_NAME.match(url_or_remote) and not Path(url_or_remote).exists():
        known = ", ".join(sorted(table)) or "none configured"
        raise UnknownNameError(f"no remote named {url_or_remote!r} (remotes: {known}); give a URL or `adapterhub remote add`")
    return normalise_url(url_or_remote)


def scheme_of(url: str) -> str:
    m = _SCHEME.match(url)
    if not m:
        raise ConfigError(f"invalid store URL {url!r}")
    return m.group(1)


def with_options(url: str, **options: str | None) -> str:
    """Add query options (``endpoint_url=...``) to a store URL, keeping existing ones."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update({k: v for k, v in options.items() if v})
    # ':' and '/' stay readable (s3://b/p?endpoint_url=http://host:9000): they are legal
    # in a query and parse_qsl reads them back unchanged.
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query, safe=":/"), parts.fragment))


def env_float(name: str, default: float) -> float:
    """A numeric store setting from the environment (``ADAPTERHUB_S3_READ_TIMEOUT``...);
    unset or empty: ``default``; not a number: a one-line ``ConfigError``."""
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None


def open_store(url_or_remote: str) -> Store:
    """Build the store for a URL or remote name through the catalog's store factories."""
    from adapterhub.catalog import get_catalog

    url = resolve_url(url_or_remote)
    factory = get_catalog().store_factory(scheme_of(url))
    return factory(url)
