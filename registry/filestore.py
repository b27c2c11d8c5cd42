"""``file:///path`` stores: a registry on a shared filesystem (NFS, SMB, a mounted disk).

Same layout and code as the local store (:class:`~adapterhub.registry.local.LocalStore`).
Correctness never relies on file locks (which some network filesystems silently ignore):
versions are created with a hard-link no-replace (``O_EXCL`` where links are missing),
everything else is temp file + fsync + rename.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from adapterhub.errors import ConfigError


def path_from_file_url(url: str) -> Path:
    parts = urlsplit(url)
    if parts.scheme != "file":
        raise ConfigError(f"not a file:// URL: {url!r}")
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(f"file:// URL {url!r} names host {parts.netloc!r}; mount the share and use file:///path")
    path = unquote(parts.path)
    if not path.startswith("/") or "\x00" in path:
        raise ConfigError(f"file:// URL {url!r} needs an absolute path (file:///srv/registry)")
    return Path(path)
