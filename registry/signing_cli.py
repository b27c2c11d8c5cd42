"""``adapterhub keys``, ``sign`` and ``signatures``, and the signing flags other commands share.

Imports argparse only at module level: cryptography and model-signing load when a
command signs or checks (the CLI's start-up stays fast; tests/adapterhub/cli).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from adapterhub.cli.output import add_json_flag, print_json, print_table
from adapterhub.errors import ConfigError


def add_trust_opts(parser: argparse.ArgumentParser, require: bool = True) -> None:
    """``--trust FILE`` (default ``ADAPTERHUB_TRUST``) and, where adapters enter, ``--require-signed``."""
    parser.add_argument("--trust", metavar="FILE", help="trust file: public keys and the adapter globs each may sign for (default: ADAPTERHUB_TRUST; docs/signing.md)")
    if require:
        parser.add_argument("--require-signed", action="store_true",
                            help="refuse an adapter unless a key trusted for its name signed it")


def trust_policy(args: argparse.Namespace) -> Any:
    """The TrustPolicy of ``--trust``/``ADAPTERHUB_TRUST`` (None if neither); with
    ``--require-signed`` one is required."""
    from adapterhub.registry.trust import TRUST_ENV, TrustPolicy

    policy = TrustPolicy.from_option(getattr(args, "trust", None))
    if getattr(args, "require_signed", False) and policy is None:
        raise ConfigError(f"--require-signed needs a trust file: --trust FILE or {TRUST_ENV}")
    return policy


def required_trust(args: argparse.Namespace) -> Any:
    """The policy to enforce: only with ``--require-signed`` (a trust file alone only informs)."""
    policy = trust_policy(args)
    return policy if getattr(args, "require_signed", False) else None


def load_keys(names: list[str]) -> list[Any]:
    """Private keys for ``--sign`` (loaded, and decrypted, before anything is pushed)."""
    from adapterhub.registry.keys import load_private_key

    return [load_private_key(k) for k in names]


def read_bundles(files: list[Path]) -> list[bytes]:
    """``--signature`` files, each checked to be a model-signing bundle before anything is pushed."""
    from adapterhub.registry.signing import parse_bundle

    from adapterhub.errors import SignatureError

    out = []
    for f in files:
        try:
            data = f.read_bytes()
        except OSError as exc:
            raise ConfigError(f"--signature {f}: cannot read ({exc.strerror})") from None
        try:
            parse_bundle(data)
        except SignatureError as exc:
            raise SignatureError(f"--signature {f}: {exc}") from None
        out.append(data)
    return out


def check_can_sign(reg: Any, to: str | None, keys: list[Any], bundles: list[bytes]) -> None:
    """Before a push: a store that cannot hold signatures is refused up front (no unsigned
    version left behind by a ``push --sign`` that fails half-way)."""
    if keys or bundles:
        from adapterhub.registry.signatures import signature_store

        signature_store(reg.store(to))


def apply_signatures(reg: Any, ref: str, to: str | None, keys: list[Any], bundles: list[bytes]) -> list[dict[str, Any]]:
    """Sign ``ref`` with each key and attach each bundle; one row per signature."""
    name, _, version = ref.partition("@")
    rows = []
    for key in keys:
        _, sid, created = reg.sign(ref, key, to)
        rows.append({"id": sid, "created": created, "how": "signed"})
    for data in bundles:
        sid, created = reg.put_signature(name, version, data, to)
        rows.append({"id": sid, "created": created, "how": "attached"})
    return rows


def print_signature_rows(ref: str, rows: list[dict[str, Any]]) -> None:
    for r in rows:
        state = "stored" if r["created"] else "already stored"
        print(f"{r['how']} {ref}: signature {r['id'][:16]} {state}")


def _target(args: argparse.Namespace, attr: str) -> str | None:
    from adapterhub.registry.cli import _target as target

    return target(getattr(args, attr), args.endpoint_url)


class KeysCommand:
    name = "keys"
    help = "signing keys: keys generate NAME [--out DIR] [--encrypt] | keys list"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="keys_cmd", metavar="ACTION", required=True)
        gen = sub.add_parser("generate", help="make an EC P-256 key pair: NAME.key (0600) and NAME.pub")
        gen.add_argument("key_name", metavar="NAME")
        gen.add_argument("--out", type=Path, metavar="DIR", help="where to write (default: ADAPTERHUB_KEYS or $ADAPTERHUB_HOME/keys)")
        gen.add_argument("--encrypt", action="store_true",
                         help="encrypt the private key with a passphrase (ADAPTERHUB_KEY_PASSPHRASE, else asked)")
        add_json_flag(gen)
        ls = sub.add_parser("list", help="key pairs in the keys directory, with fingerprints")
        ls.add_argument("--dir", type=Path, metavar="DIR", help="another keys directory")
        add_json_flag(ls)

    def run(self, args: argparse.Namespace) -> int:
        from adapterhub.registry import keys

        if args.keys_cmd == "generate":
            info = keys.generate(args.key_name, args.out, encrypt=args.encrypt)
            if args.json:
                print_json(info.as_dict())
            else:
                print(f"private key {info.private} (0600{', encrypted' if info.encrypted else ''})")
                print(f"public key  {info.public} (fingerprint {info.fingerprint[:16]}): put it in trust files")
            return 0
        found = keys.list_keys(args.dir)
        if args.json:
            print_json([k.as_dict() for k in found])
        elif not found:
            print(f"no keys in {args.dir or keys.keys_dir()} (make one with `adapterhub keys generate NAME`)", file=sys.stderr)
        else:
            print_table(("name", "fingerprint", "private key", "public key"),
                        [(k.name, k.fingerprint[:16], "-" if k.private is None else f"{k.private}{' (encrypted)' if k.encrypted else ''}",
                          str(k.public)) for k in found])
        return 0


class SignCommand:
    name = "sign"
    help = "sign a published version (--key), or attach an existing signature (--signature)"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        from adapterhub.registry.cli import _add_remote_opts

        parser.add_argument("ref", metavar="REF", help="NAME, NAME@VERSION or NAME:TAG (signed as the version it resolves to)")
        parser.add_argument("--key", action="append", default=[], metavar="KEY", help="private key file or key NAME (repeatable)")
        parser.add_argument("--signature", action="append", default=[], type=Path, metavar="FILE",
                            help="attach a model-signing bundle made elsewhere (repeatable)")
        _add_remote_opts(parser, "--to")
        add_json_flag(parser)

    def run(self, args: argparse.Namespace) -> int:
        from adapterhub.registry.cli import _registry

        if not args.key and not args.signature:
            raise ConfigError("sign needs --key KEY or --signature FILE")
        keys, bundles = load_keys(args.key), read_bundles(args.signature)
        reg = _registry(args)
        to = _target(args, "to")
        ref = f"{'@'.join(reg.resolve(reg.store(to), args.ref))}"
        rows = apply_signatures(reg, ref, to, keys, bundles)
        if args.json:
            print_json({"ref": ref, "signatures": rows})
        else:
            print_signature_rows(ref, rows)
        return 0


class SignaturesCommand:
    name = "signatures"
    help = "list a version's signatures with verdicts; --out DIR writes them as files"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        from adapterhub.registry.cli import _add_remote_opts

        parser.add_argument("ref", metavar="REF")
        parser.add_argument("--out", type=Path, metavar="DIR",
                            help="write each bundle as DIR/<id>.sig (for `model_signing verify key`)")
        add_trust_opts(parser, require=False)
        _add_remote_opts(parser, "--from")
        add_json_flag(parser)

    def run(self, args: argparse.Namespace) -> int:
        from adapterhub.registry.cli import _registry

        reg = _registry(args)
        src = _target(args, "from_")
        ref, verdicts = reg.signature_verdicts(args.ref, src, trust_policy(args))
        if args.out is not None:
            _, bundles = reg.signatures(ref, src)
            args.out.mkdir(parents=True, exist_ok=True)
            from adapterhub.registry.signing import signature_id

            for data in bundles:
                (args.out / f"{signature_id(data)}.sig").write_bytes(data)
        if args.json:
            print_json({"ref": ref, "signatures": [v.as_dict() for v in verdicts]})
            return 0
        print(signature_lines(ref, verdicts))
        if args.out is not None and verdicts:
            print(f"wrote {len(verdicts)} signature(s) to {args.out}", file=sys.stderr)
        return 0


def signature_lines(ref: str, verdicts: list[Any]) -> str:
    if not verdicts:
        return f"{ref}: unsigned"
    return "\n".join(f"{ref}: signature {v.signature_id[:16]} {v.line()}" for v in verdicts)


COMMANDS = (KeysCommand, SignCommand, SignaturesCommand)
