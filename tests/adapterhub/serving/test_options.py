"""Every engine limit is a CLI flag with the config's own default and a one-line error."""

from __future__ import annotations

import argparse

import pytest

from adapterhub.cli.main import main
from adapterhub.errors import ConfigError
from adapterhub.serving.config import EngineConfig
from adapterhub.serving.options import (
    FLAGS,
    adapter_budget_bytes,
    add_engine_options,
    engine_config,
)


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_engine_options(parser)
    return parser.parse_args(list(argv))


def test_the_flag_table_matches_the_config() -> None:
    # The table exists so that parsers build without pydantic; it must not drift.
    fields = {n: f for n, f in EngineConfig.model_fields.items() if n != "loader_threads"}
    assert set(FLAGS) == set(fields)
    for name, (kind, shown, _) in FLAGS.items():
        default = fields[name].default
        if default is not None:
            assert kind(shown) == default, name


def test_no_prefix_cache_turns_it_off() -> None:
    assert engine_config(_parse("--no-prefix-cache")).prefix_cache is False
    assert engine_config(_parse("--prefix-block-tokens", "32")).prefix_block_tokens == 32
    with pytest.raises(ConfigError, match="--prefix-block-tokens"):
        engine_config(_parse("--prefix-block-tokens", "0"))


def test_unset_flags_keep_the_library_defaults() -> None:
    assert engine_config(_parse()) == EngineConfig()
    assert adapter_budget_bytes(_parse()) is None


def test_flags_set_the_config() -> None:
    cfg = engine_config(_parse("--max-queue", "3", "--max-running", "2", "--max-prefill-tokens", "16",
                               "--max-model-len", "128", "--max-kv-tokens", "999", "--max-loaded-adapters", "4",
                               "--resolve-ttl-s", "0.5"))
    assert (cfg.max_queue, cfg.max_running, cfg.max_prefill_tokens, cfg.max_model_len) == (3, 2, 16, 128)
    assert (cfg.max_kv_tokens, cfg.max_loaded_adapters, cfg.resolve_ttl_s) == (999, 4, 0.5)
    assert adapter_budget_bytes(_parse("--max-adapter-memory", "1.5")) == 1572864


@pytest.mark.parametrize("argv", [("--max-queue", "0"), ("--max-running", "-1"), ("--max-adapter-memory", "0")])
def test_bad_limits_are_one_line_errors(argv: tuple[str, str]) -> None:
    with pytest.raises(ConfigError, match=f"invalid {argv[0]}") as err:
        args = _parse(*argv)
        engine_config(args)
        adapter_budget_bytes(args)
    assert "\n" not in str(err.value)


def test_context_limit_from_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["generate", "--base", "tiny-random-llama", "--max-model-len", "16", "--max-new-tokens", "4",
                 "a prompt that is certainly longer than sixteen tokens once the chat template is applied"])
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the weight-loading bar
    assert code != 0 and last.startswith("adapterhub: error:") and "context window of 16" in last
