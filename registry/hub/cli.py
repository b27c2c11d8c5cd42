"""``adapterhub hub``: web pages and the JSON registry API over a store (uvicorn).

Importing this module is cheap (the command list is built at every CLI start): Starlette,
Jinja2 and uvicorn are imported only when the command runs.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any


class HubCommand:
    name = "hub"
    help = "serve a registry's adapters as web pages and an HTTP registry API (read-only unless --tokens)"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--registry", default=None, metavar="URL",
                            help="store to serve: a directory, file://, s3://, hf:// URL or remote name (default: the local registry)")
        parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
        parser.add_argument("--port", type=int, default=8080, help="port to bind (default 8080)")
        parser.add_argument("--tokens", default=None, metavar="FILE",
                            help="YAML tokens file (docs/hub.md); without it the hub is read-only and open to read")
        parser.add_argument("--refresh", type=float, default=30.0, metavar="S",
                            help="seconds before the index cache is refreshed from the store in the background (default 30)")
        parser.add_argument("--max-upload", type=float, default=None, metavar="MB",
                            help="largest blob a push may upload, in MB (default 16384: 16 GiB; a larger one gets 413)")
        parser.add_argument("--public-url", default=None, metavar="URL",
                            help="address clients reach this hub at, for the snippets on adapter pages (default: the request's)")

    def run(self, args: argparse.Namespace) -> int:
        from adapterhub.registry.client import Registry

        from adapterhub.errors import ConfigError
        from adapterhub.net import is_loopback

        if not 0 < args.port < 65536:
            raise ConfigError("invalid --port: must be 1..65535")
        if args.refresh < 0:
            raise ConfigError("invalid --refresh: must be >= 0 seconds")
        if args.max_upload is not None and not args.max_upload > 0:
            raise ConfigError("invalid --max-upload: must be > 0 MB")
        tokens = None
        if args.tokens is not None:
            from .tokens import TokenRing

            tokens = TokenRing.from_file(args.tokens)
        # The hub writes through this client (index, pending markers, push's checks),
        # exactly as `adapterhub push --to` the same store would.
        registry = Registry(args.registry, progress=False)
        store = registry.store(args.registry)

        import uvicorn

        from .app import build_app
        from .state import HubState

        state = HubState.open(store, tokens=tokens, ttl_s=args.refresh, registry=registry)
        state.public_url = args.public_url.rstrip("/") if args.public_url else None
        if args.max_upload is not None:
            state.max_blob_bytes = int(args.max_upload * 1024 * 1024)
        snap = state.cache.snapshot()  # the first listing before the first request, and errors now
        mode = "read-only, open to read" if tokens is None else "tokens from " + args.tokens
        n = len(snap.latest)
        print(f"adapterhub hub: {n} adapter{'' if n == 1 else 's'} from {store.url}, {mode}, at http://{args.host}:{args.port}", file=sys.stderr)
        if tokens is not None and not is_loopback(args.host):
            print("adapterhub hub: tokens travel in clear over http; put a TLS proxy in front for other machines", file=sys.stderr)

        class _Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: Any) -> None:
                super().handle_exit(sig, frame)
                if sig == signal.SIGTERM:
                    # uvicorn re-raises a captured signal after shutting down (the process
                    # would die by SIGTERM); a clean stop exits 0 instead.
                    self._captured_signals = [s for s in self._captured_signals if s != sig]

        # Access lines show method, path and status; tokens travel only in headers, which
        # are never logged.
        _Server(uvicorn.Config(build_app(state), host=args.host, port=args.port, log_level="info",
                               timeout_graceful_shutdown=10)).run()
        return 0
