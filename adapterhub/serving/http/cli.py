"""``adapterhub serve``: the engine behind an OpenAI-compatible HTTP API (uvicorn).

SIGTERM (or Ctrl-C) stops admitting (new completions get 503, ``/health`` turns 503),
lets running requests finish for up to ``--grace`` seconds, then exits 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapterhub import logs
from adapterhub.hookspecs import hookimpl
from adapterhub.logs import add_log_options
from adapterhub.net import is_loopback
from adapterhub.registry.signing_cli import add_trust_opts, required_trust
from adapterhub.serving.options import adapter_budget_bytes, add_engine_options, engine_config
from adapterhub.serving.ray.options import add_ray_options, ray_settings

if TYPE_CHECKING:
    from adapterhub.protocols.command import Command
    from adapterhub.serving.http.state import HttpLimits

# Mirrors of adapterhub.serving.http.state's defaults: this module is imported at every CLI
# start, where Starlette must not load (a test holds the two equal).
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_BODY_TIMEOUT_S = 30.0
DEFAULT_MAX_CONNECTIONS = 1024


class ServeCommand:
    name = "serve"
    help = "serve the base and its adapters over an OpenAI-compatible HTTP API (model = adapter ref)"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--base", default="smollm2-135m-instruct", help="base model alias, directory or HF id")
        parser.add_argument("--registry", default=None, metavar="URL", help="registry that adapter refs are pulled from (default: local)")
        parser.add_argument("--adapter", action="append", default=[], metavar="REF",
                            help="adapter to load before serving (repeatable); others load on first request")
        parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
        parser.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
        add_trust_opts(parser)
        parser.add_argument("--api-keys", default=None, metavar="FILE", help="YAML keys file (docs/serving-http.md); without it anyone who can connect may call")
        parser.add_argument("--grace", type=float, default=30.0, metavar="S", help="seconds running requests may take to finish on SIGTERM (default 30)")
        parser.add_argument("--device", default=None)
        parser.add_argument("--threads", type=int, default=None, metavar="N",
                            help="torch CPU threads (default: torch's; 1 avoids spin-waiting on a busy machine)")
        add_engine_options(parser)
        http = parser.add_argument_group("HTTP limits (docs/serving-http.md)")
        http.add_argument("--max-body-bytes", type=int, default=None, metavar="N",
                          help=f"largest request body; larger ones get 413 before they are read [default: {DEFAULT_MAX_BODY_BYTES} (4 MiB)]")
        http.add_argument("--body-timeout", type=float, default=None, metavar="S",
                          help=f"seconds a request body may take to arrive; slower ones get 408 [default: {DEFAULT_BODY_TIMEOUT_S:g}]")
        http.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS, metavar="N",
                          help=f"open connections and requests at once; more get 503 at once [default: {DEFAULT_MAX_CONNECTIONS}]")
        http.add_argument("--keep-alive", type=int, default=5, metavar="S",
                          help="seconds an idle keep-alive connection stays open [default: 5]")
        add_log_options(parser, prompts=True)
        add_ray_options(parser)

    def run(self, args: argparse.Namespace) -> int:
        from adapterhub.errors import ConfigError
        from adapterhub.serving.http.keys import KeyRing

        # Everything a typo can break is checked before the base model loads.
        config = engine_config(args)
        if not 0 < args.port < 65536:
            raise ConfigError("invalid --port: must be 1..65535")
        if args.grace < 0:
            raise ConfigError("invalid --grace: must be >= 0")
        if args.threads is not None and args.threads < 1:
            raise ConfigError("invalid --threads: must be >= 1")
        limits = http_limits(args)
        if args.max_connections < 1:
            raise ConfigError("invalid --max-connections: must be >= 1")
        if args.keep_alive < 1:
            raise ConfigError("invalid --keep-alive: must be >= 1 second")
        keys = KeyRing.from_file(args.api_keys) if args.api_keys else None
        trust = required_trust(args)
        if trust is not None and any(Path(ref).exists() for ref in args.adapter):
            raise ConfigError("--require-signed: --adapter takes registry refs only (a directory has no signatures)")
        ray_opts = ray_settings(args)  # None without --ray
        if keys is None and not is_loopback(args.host):
            print(f"warning: serving on {args.host} without --api-keys: anyone who can reach it may use "
                  "every adapter and load/unload adapters", file=sys.stderr)

        logs.configure(args.log_level, args.log_format, prompts=args.log_prompts)  # every check passed: serving now

        import torch
        import uvicorn

        if args.threads is not None:
            torch.set_num_threads(args.threads)

        from adapterhub.host import AdapterHost
        from adapterhub.serving import Engine
        from adapterhub.serving.http.app import create_app

        engine: Any
        if ray_opts is not None:  # engine replicas on Ray Serve (docs/serving-ray.md); they preload --adapter
            from adapterhub.serving.ray.cluster import ray_engine
            from adapterhub.serving.ray.ingress import create_ray_app as create_app  # type: ignore[assignment]

            engine = ray_engine(args, config, ray_opts, adapter_budget_bytes(args))
        else:
            host = AdapterHost(args.base, device=args.device, registry_url=args.registry,
                               device_budget_bytes=adapter_budget_bytes(args))
            engine = Engine(host, config, registry_url=args.registry, trust=trust)
        try:
            _preload(engine, [] if ray_opts is not None else args.adapter)
            app = create_app(engine, base_alias=args.base, keys=keys, registry_url=args.registry, limits=limits)
            state = app.state.server

            grace = args.grace

            class _Server(uvicorn.Server):
                def handle_exit(self, sig: int, frame: Any) -> None:
                    if not state.draining:
                        state.draining = True  # new completions: 503 while running ones finish
                        # Shortly before uvicorn's grace runs out and it cancels what still
                        # runs (a bare 500), the engine stops: each unfinished request gets
                        # a 503 "shutting down" (or an error event on its stream) instead.
                        timer = threading.Timer(max(0.0, grace - min(1.0, grace / 4)), engine.close)
                        timer.daemon = True  # a quick drain must not wait for it
                        timer.start()
                    super().handle_exit(sig, frame)
                    if sig == signal.SIGTERM:
                        # uvicorn re-raises captured signals once drained (the process would
                        # die by SIGTERM); a drained shutdown exits 0 instead.
                        self._captured_signals = [s for s in self._captured_signals if s != sig]

            server = _Server(uvicorn.Config(
                app, host=args.host, port=args.port, log_level=args.log_level,
                log_config=None,  # logs.configure set the handlers: one stream, one format
                timeout_graceful_shutdown=int(args.grace) or None,
                limit_concurrency=args.max_connections, timeout_keep_alive=args.keep_alive,
            ))
            print(f"serving {args.base} on http://{args.host}:{args.port}/v1 "
                  f"({'keys: ' + str(len(keys)) if keys else 'no keys'})", file=sys.stderr)
            server.run()
        finally:
            engine.close()
        return 0


def http_limits(args: argparse.Namespace) -> HttpLimits:
    """The :class:`HttpLimits` the flags ask for (one-line errors for bad values)."""
    from adapterhub.errors import ConfigError
    from adapterhub.serving.http.state import HttpLimits

    if args.max_body_bytes is not None and args.max_body_bytes < 1:
        raise ConfigError("invalid --max-body-bytes: must be >= 1")
    if args.body_timeout is not None and not args.body_timeout > 0:
        raise ConfigError("invalid --body-timeout: must be > 0 seconds")
    return HttpLimits(
        max_body_bytes=args.max_body_bytes or DEFAULT_MAX_BODY_BYTES,
        body_timeout_s=args.body_timeout or DEFAULT_BODY_TIMEOUT_S,
    )


def _preload(engine: Any, refs: list[str]) -> None:
    """Load each ``--adapter`` (a directory, or a ref pulled through the engine's
    single-flight loads, which start the engine) before the port opens."""
    for ref in refs:
        if Path(ref).exists():
            engine.host.load(ref)
            continue
        key = engine.load(ref)
        print(f"loaded {ref} as {key}", file=sys.stderr)


@hookimpl
def adapterhub_register_commands(register: Callable[[Command], None]) -> None:
    register(ServeCommand())
