"""``adapterhub hub``: web pages and the JSON registry API over a store (uvicorn).

Importing this module is cheap (the command list is built at every CLI start): Starlette,
Jinja2 and uvicorn are imported only when the command runs.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from adapterhub.registry.signing_cli import add_trust_opts, trust_policy

from adapterhub.logs import add_log_options


class HubCommand:
    name = "hub"
    help = "serve a registry's adapters as web pages and an HTTP registry API (read-only unless --tokens)"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--registry", default=None, metavar="URL",
                            help="store to serve: a directory, file://, s3://, hf:// URL or remote name (default: the local registry)")
        parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
        parser.add_argument("--port", type=int, default=8080, help="port to bind (default 8080)")
        add_trust_opts(parser)
        parser.add_argument("--tokens", default=None, metavar="FILE",
                            help="YAML tokens file (docs/hub.md); without it the hub is read-only and open to read")
        parser.add_argument("--refresh", type=float, default=30.0, metavar="S",
                            help="seconds before the index cache is refreshed from the store in the background (default 30)")
        parser.add_argument("--max-upload", type=float, default=None, metavar="MB",
                            help="largest blob a push may upload, in MB (default 16384: 16 GiB; a larger one gets 413)")
        parser.add_argument("--public-url", default=None, metavar="URL",
                            help="address clients reach this hub at, for the snippets on adapter pages (default: the request's)")
        parser.add_argument("--forwarded-allow-ips", default="127.0.0.1,::1", metavar="IPS",
                            help="comma-separated proxy addresses (or *) whose X-Forwarded-Proto/-For are trusted, so the "
                                 "login cookie is Secure behind an https proxy (default 127.0.0.1,::1)")
        add_log_options(parser)

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
        allow_ips = _allow_ips(args.forwarded_allow_ips)
        trust = trust_policy(args)  # a bad trust file is refused before anything starts
        tokens = None
        if args.tokens is not None:
            from .tokens import TokenRing

            tokens = TokenRing.from_file(args.tokens)
        # The hub writes through this client (index, pending markers, push's checks),
        # exactly as `adapterhub push --to` the same store would.
        registry = Registry(args.registry, progress=False)
        store = registry.store(args.registry)
        from adapterhub import logs

        # Only once every option is checked: the command's own errors stay one plain line.
        logs.configure(args.log_level, args.log_format)

        import uvicorn

        from .app import build_app
        from .state import HubState

        state = HubState.open(store, tokens=tokens, ttl_s=args.refresh, registry=registry)
        state.trust, state.require_signed = trust, args.require_signed
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

        # log_config=None: keep the handler logs.configure() installed (uvicorn's own
        # dictConfig would replace it); the access lines are the hub's (registry/hub/access.py).
        # proxy_headers: request.url.scheme is the proxy's https only for the addresses trusted.
        _Server(uvicorn.Config(build_app(state), host=args.host, port=args.port, log_level=args.log_level,
                               log_config=None, access_log=False, proxy_headers=True, forwarded_allow_ips=allow_ips,
                               timeout_graceful_shutdown=10)).run()
        return 0


def _allow_ips(raw: str) -> list[str]:
    """``--forwarded-allow-ips``: ``*`` or addresses / networks, each checked now (one line if not)."""
    import ipaddress

    from adapterhub.errors import ConfigError

    items = [item.strip() for item in raw.split(",") if item.strip()]
    if not items:
        raise ConfigError("invalid --forwarded-allow-ips: give addresses (comma-separated) or *")
    for item in items:
        if item == "*":
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ConfigError(f"invalid --forwarded-allow-ips entry {item[:60]!r}: expected an IP address, a network (10.0.0.0/8) or *") from None
    return items
