"""``adapterhub`` registry commands: push, pull, ls, search, show, tag, rm, gc, verify,
remote, index, export-peft, import-peft.

Every command prints its result on stdout (``--json``: JSON only), progress bars on
stderr, and raises ``AdapterhubError`` for user errors (printed as one line by the CLI).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from adapterhub.registry.signing_cli import add_trust_opts, required_trust, trust_policy

from adapterhub.cli.output import add_json_flag, print_json, print_table
from adapterhub.errors import ConfigError


def _registry(args: argparse.Namespace) -> Any:
    from adapterhub.registry.client import Registry

    reg = Registry()  # progress bars go to stderr, so --json stdout stays clean
    token = getattr(args, "token", None)
    if token is not None:
        reg.use_store(*_hub_with_token(getattr(args, "to", None) or getattr(args, "from_", None), token))
    return reg


def _hub_with_token(target: str | None, token: str) -> tuple[str, Any]:
    """``--token``: the http store for ``target`` (a hub URL or remote), built with it."""
    from adapterhub.registry import remotes
    from adapterhub.registry.http import HttpStore, check_token

    if target is None:
        raise ConfigError("--token applies to an http(s):// hub named with --to/--from")
    url = remotes.resolve_url(target)
    if remotes.scheme_of(url) not in ("http", "https"):
        raise ConfigError(f"--token applies to http(s):// hubs, not {url}")
    return target, HttpStore(url, token=check_token(token, "--token"))


def _target(value: str | None, endpoint_url: str | None) -> str | None:
    """``--to/--from`` plus ``--endpoint-url`` → a store URL (or None: local)."""
    if value is None:
        if endpoint_url:
            raise ConfigError("--endpoint-url needs --to/--from with an s3:// URL or remote")
        return None
    if not endpoint_url:
        return value
    from adapterhub.registry import remotes

    url = remotes.resolve_url(value)
    if remotes.scheme_of(url) != "s3":
        raise ConfigError(f"--endpoint-url applies to s3:// stores, not {url}")
    return remotes.with_options(url, endpoint_url=endpoint_url)


def _add_remote_opts(parser: argparse.ArgumentParser, flag: str) -> None:
    dest = "to" if flag == "--to" else "from_"
    parser.add_argument(flag, dest=dest, metavar="URL|REMOTE", help="a store URL (s3://, hf://, file://, http(s):// of a hub) or a remote name")
    parser.add_argument("--endpoint-url", help="S3 endpoint (default: AWS_ENDPOINT_URL or AWS)")
    parser.add_argument(
        "--token",
        help="bearer token for an http(s):// hub (default: ADAPTERHUB_TOKEN or the file ADAPTERHUB_TOKEN_FILE names;"
        " prefer those in CI: a command line shows in ps and shell history)",
    )


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


class PushCommand:
    name = "push"
    help = "validate an adapter directory and publish it as NAME[@VERSION]"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("dir", type=Path, help="adapter directory (manifest.json + adapter.safetensors)")
        parser.add_argument("name", metavar="NAME[@VERSION]", help="e.g. team/sentiment or team/sentiment@1.2.0 (default: next patch)")
        parser.add_argument("--tag", help="also point this tag at the new version")
        parser.add_argument("--sign", action="append", default=[], metavar="KEY",
                            help="sign the pushed version with this private key file or key NAME (repeatable; docs/signing.md)")
        parser.add_argument("--signature", action="append", default=[], type=Path, metavar="FILE",
                            help="attach a model-signing bundle of this version made elsewhere (repeatable)")
        _add_remote_opts(parser, "--to")
        add_json_flag(parser)

    def run(self, args: argparse.Namespace) -> int:
        from adapterhub.registry.names import parse_name_version
        from adapterhub.registry.signing_cli import (
            apply_signatures,
            check_can_sign,
            load_keys,
            print_signature_rows,
            read_bundles,
        )

        name, version = parse_name_version(args.name)
        # Keys are loaded (and passphrases asked) before anything is pushed: a wrong
        # passphrase leaves no unsigned version behind.
        keys, bundles = load_keys(args.sign), read_bundles(args.signature)
        reg = _registry(args)
        to = _target(args.to, args.endpoint_url)
        check_can_sign(reg, to, keys, bundles)
        done = reg.publish(args.dir, name, version=version, tag=args.tag, to=to)
        store = reg.store(to)
        signed = apply_signatures(reg, done.ref, to, keys, bundles)
        if args.json:
            print_json({"ref": done.ref, "store": store.url, "tag": args.tag, "created": done.created, "signatures": signed})
            return 0
        if done.created:
            print(f"pushed {done.ref} to {store.url}" + (f" (tag {args.tag})" if args.tag else ""))
        else:
            print(f"{done.ref} already up to date in {store.url}" + (f" (tag {args.tag})" if args.tag else ""))
        print_signature_rows(done.ref, signed)
        return 0


class PullCommand:
    name = "pull"
    help = "fetch and verify an adapter; prints its local directory"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("ref", metavar="REF", help="NAME, NAME@VERSION or NAME:TAG")
        add_trust_opts(parser)
        _add_remote_opts(parser, "--from")
        add_json_flag(parser)

    def run(self, args: argparse.Namespace) -> int:
        trust = required_trust(args)
        reg = _registry(args)
        ref, path = reg.fetch(args.ref, _target(args.from_, args.endpoint_url), trust)
        if args.json:
            print_json({"ref": ref, "path": str(path)})
        else:
            print(path)
        return 0


class LsCommand:
    name = "ls"
    help = "list adapters with their versions and tags"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        _add_remote_opts(parser, "--from")
        add_json_flag(parser)

    def run(self, args: argparse.Namespace) -> int:
        rows = _registry(args).ls(_target(args.from_, args.endpoint_url))
        if args.json:
            print_json(rows)
        elif not rows:
            print("no adapters", file=sys.stderr)
        else:
            print_table(
                ("name", "latest", "versions", "tags"),
                [(r["name"], r["latest"], len(r["versions"]), ", ".join(f"{t}->{v}" for t, v in sorted(r["tags"].items()))) for r in rows],
            )
        return 0


def _metrics_text(metrics: dict[str, dict[str, float]], intervals: dict[str, dict[str, Any]] | None = None) -> str:
    """``task.metric=value``, with the stored ``[low, high] n=N`` when there is one."""
    parts: list[str] = []
    for task, values in sorted(metrics.items()):
        for m, v in sorted(values.items()):
            iv = (intervals or {}).get(task, {}).get(m) or {}
            ci = f" [{iv['low']:.4g}, {iv['high']:.4g}] n={iv['n']}" if iv.get("low") is not None and iv.get("high") is not None else ""
            parts.append(f"{task}.{m}={v:.4g}{ci}")
    return " ".join(parts)


class SearchCommand:
    name = "search"
    help = "search the local registry by name, task, method, base, tag and metric thresholds"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("query", nargs="?", help="name substring or glob (same as --name)")
        parser.add_argument("--name")
        parser.add_argument("--task")
        parser.add_argument("--method")
        parser.add_argument("--base", help="base fingerprint (sha256 prefix) or base model name")
        parser.add_argument("--tag")
        parser.add_argument("--where", action="append", default=[], metavar="METRIC OP VALUE", help="e.g. rougeL>0.3, sentiment-rt.accuracy>=0.8 (repeatable)")
        parser.add_argument("--limit", type=int)
        add_json_flag(parser)

    def run(self, args: argparse.Namespace) -> int:
        rows = _registry(args).search(
            name=args.name or args.query, task=args.task, method=args.method, base=args.base,
            tag=args.tag, where=args.where, limit=args.limit,
        )
        if args.json:
            print_json(rows)
        elif not rows:
            print("no matches", file=sys.stderr)
        else:
            print_table(
                ("ref", "task", "method", "tags", "metrics"),
                [(r["ref"], r["task"], r["method"], ",".join(sorted(r["tags"])), _metrics_text(r["metrics"])) for r in rows],
            )
        return 0


class ShowCommand:
    name = "show"
    help = "show an adapter version: manifest, tags, metrics and attached evaluations"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("ref", metavar="REF")
        _add_remote_opts(parser, "--from")
        add_json_flag(parser)

    def run(self, args: argparse.Namespace) -> int:
        info = _registry(args).show(args.ref, _target(args.from_, args.endpoint_url))
        if args.json:
            print_json(info)
            return 0
        m = info["manifest"]
        lines = [
            f"{info['ref']}  ({info['store']})",
            f"  tags:        {', '.join(info['tags']) or '-'}",
            f"  versions:    {', '.join(info['versions'])}",
            f"  task:        {m.get('task') or '-'}",
            f"  method:      {m['method']} ({m['method_kind']}) {json.dumps(m['method_config'], sort_keys=True)}",
            f"  base:        {m['base']['name']} {m['base']['architecture']} sha256:{m['base']['weights_sha256'][:16]}",
            "  files:       " + ", ".join(f"{f['path']} {_mb(f['size'])}" for f in m["files"]),
            f"  trainable:   {m['trainable_parameters']:,} parameters",
            f"  created:     {m['created']}",
        ]
        if m.get("metrics"):
            lines.append(f"  metrics:     {_metrics_text(m['metrics'], m.get('intervals'))}")
        if m.get("forgetting"):
            rows = m["forgetting"].get("rows", [])
            if any(r.get("verdict") for r in rows):  # verdicts as stored, never recomputed
                counts = {v: sum(r.get("verdict") == v for r in rows) for v in ("forgotten", "unresolved", "kept")}
                n = sorted({r["n"] for r in rows if isinstance(r.get("n"), int)})
                lines.append(f"  forgetting:  {len(rows)} row(s): {counts['forgotten']} forgotten, {counts['unresolved']} unresolved, "
                             f"{counts['kept']} kept (n={'/'.join(map(str, n)) or '?'})")
            else:
                flagged = [r for r in rows if r.get("flagged")]
                lines.append(f"  forgetting:  {len(rows)} row(s), {len(flagged)} flagged")
        for rec in info["evaluations"]:
            kind = rec.get("kind", "evaluation")
            lines.append(f"  evaluation:  {kind} {json.dumps(rec, sort_keys=True)[:160]}")
        print("\n".join(lines))
        return 0


class TagCommand:
    name = "tag"
    help = "point TAG at the version REF resolves to"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("ref", metavar="REF")
        parser.add_argument("tag", metavar="TAG")
        _add_remote_opts(parser, "--to")

    def run(self, args: argparse.Namespace) -> int:
        ref = _registry(args).tag(args.ref, args.tag, _target(args.to, args.endpoint_url))
        name = ref.split("@")[0]
        print(f"{name}:{args.tag} -> {ref}")
        return 0


class RmCommand:
    name = "rm"
    help = "remove NAME@VERSION (and its tags), a tag NAME:TAG, or --all versions of NAME"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("ref", metavar="REF")
        parser.add_argument("--all", action="store_true", help="remove every version of NAME")
        _add_remote_opts(parser, "--from")

    def run(self, args: argparse.Namespace) -> int:
        removed = _registry(args).rm(args.ref, _target(args.from_, args.endpoint_url), all_versions=args.all)
        for r in removed:
            print(f"removed {r}")
        print("blobs are reclaimed by `adapterhub gc`", file=sys.stderr)
        return 0


class GcCommand:
    name = "gc"
    help = "reclaim unreferenced blobs, dangling tags and leftovers of killed pushes"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="only print the plan")
        parser.add_argument("--grace", type=float, default=3600.0, metavar="SECONDS", help="spare blobs and temp files younger than this (default 3600: pushes in flight)")
        add_json_flag(parser)

    def run(self, args: argparse.Namespace) -> int:
        plan = _registry(args).gc(dry_run=args.dry_run, grace_s=args.grace)
        if args.json:
            print_json({"dry_run": args.dry_run, **plan.as_dict()})
            return 0
        verb = "would remove" if args.dry_run else "removed"
        print(
            f"{verb}: {len(plan.blobs)} blob(s) ({_mb(plan.blob_bytes)}), {len(plan.tags)} dangling tag(s), "
            f"{len(plan.views)} stale view(s), {len(plan.temps)} temp file(s), {len(plan.quarantine)} quarantined file(s)"
        )
        return 0


class VerifyCommand:
    name = "verify"
    help = "re-hash stored blobs (of REF, or everything), quarantining corrupt ones; with REF, judge its signatures"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("ref", nargs="?", metavar="REF")
        add_trust_opts(parser)
        add_json_flag(parser)

    def run(self, args: argparse.Namespace) -> int:
        from adapterhub.registry.signing_cli import signature_lines
        from adapterhub.registry.trust import refusal

        trust = trust_policy(args)
        reg = _registry(args)
        report = reg.verify(args.ref)
        if args.ref is not None:
            ref, verdicts = reg.signature_verdicts(args.ref, None, trust)
            report["signatures"] = [v.as_dict() for v in verdicts]
            if args.require_signed:
                reason = refusal(ref, verdicts)
                if reason is not None:
                    report["problems"].append(reason)
                    report["ok"] = False
        if args.json:
            print_json(report)
        else:
            if args.ref is not None:
                print(signature_lines(ref, verdicts))
            for p in report["problems"]:
                print(f"problem: {p}")
            print(f"{'ok' if report['ok'] else 'FAILED'}: {report['versions']} version(s), {report['blobs']} blob(s) checked")
        return 0 if report["ok"] else 1


class RemoteCommand:
    name = "remote"
    help = "manage named remotes: remote add NAME URL | remote ls | remote rm NAME"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="remote_cmd", metavar="ACTION", required=True)
        add = sub.add_parser("add", help="add or replace a remote")
        add.add_argument("remote_name", metavar="NAME")
        add.add_argument("url", metavar="URL")
        add.add_argument("--endpoint-url", help="S3 endpoint stored with the remote")
        ls = sub.add_parser("ls", help="list remotes")
        add_json_flag(ls)
        rm = sub.add_parser("rm", help="remove a remote")
        rm.add_argument("remote_name", metavar="NAME")

    def run(self, args: argparse.Namespace) -> int:
        from adapterhub.registry import remotes

        if args.remote_cmd == "add":
            url = remotes.normalise_url(args.url)
            if args.endpoint_url:
                url = remotes.with_options(url, endpoint_url=args.endpoint_url)
            print(f"{args.remote_name} -> {remotes.add_remote(args.remote_name, url)}")
        elif args.remote_cmd == "rm":
            remotes.remove_remote(args.remote_name)
            print(f"removed remote {args.remote_name}")
        else:
            table = remotes.remotes()
            if getattr(args, "json", False):
                print_json(table)
            elif table:
                print_table(("name", "url"), sorted(table.items()))
            else:
                print("no remotes (add one with `adapterhub remote add NAME URL`)", file=sys.stderr)
        return 0


class IndexCommand:
    name = "index"
    help = "maintain the search index: index rebuild"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="index_cmd", metavar="ACTION", required=True)
        sub.add_parser("rebuild", help="rebuild the search index from the manifests")

    def run(self, args: argparse.Namespace) -> int:
        n = _registry(args).rebuild_index()
        print(f"index rebuilt: {n} version(s)")
        return 0


class ExportPeftCommand:
    name = "export-peft"
    help = "write REF as a PEFT directory (adapter_config.json + adapter_model.safetensors)"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("ref", metavar="REF")
        parser.add_argument("dir", type=Path, metavar="DIR")
        parser.add_argument("--base-path", help="base_model_name_or_path to record (default: the manifest's base name)")
        _add_remote_opts(parser, "--from")

    def run(self, args: argparse.Namespace) -> int:
        from adapterhub.registry.peft_interchange import export_peft

        path = _registry(args).pull(args.ref, _target(args.from_, args.endpoint_url))
        out = export_peft(path, args.dir, base_model_name_or_path=args.base_path)
        print(out)
        return 0


class ImportPeftCommand:
    name = "import-peft"
    help = "import a PEFT LoRA or prefix-tuning directory and push it as NAME[@VERSION]"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("dir", type=Path, metavar="DIR")
        parser.add_argument("name", metavar="NAME[@VERSION]")
        parser.add_argument("--base", help="the base model the adapter was trained on (alias, HF id or directory; default: adapter_config.json's base_model_name_or_path)")
        parser.add_argument("--tag")
        _add_remote_opts(parser, "--to")

    def run(self, args: argparse.Namespace) -> int:
        from adapterhub.registry.names import parse_name_version
        from adapterhub.registry.peft_interchange import import_peft

        name, version = parse_name_version(args.name)
        ref = import_peft(
            args.dir, name, base=args.base, version=version, tag=args.tag,
            to=_target(args.to, args.endpoint_url), registry=_registry(args),
        )
        print(f"imported {args.dir} as {ref}")
        return 0


from adapterhub.registry.hub.cli import HubCommand  # noqa: E402 - cheap: imports argparse only
from adapterhub.registry.signing_cli import COMMANDS as SIGNING_COMMANDS  # noqa: E402 - cheap, too

COMMANDS = (
    PushCommand, PullCommand, LsCommand, SearchCommand, ShowCommand, TagCommand, RmCommand,
    GcCommand, VerifyCommand, RemoteCommand, IndexCommand, ExportPeftCommand, ImportPeftCommand,
    HubCommand, *SIGNING_COMMANDS,
)
