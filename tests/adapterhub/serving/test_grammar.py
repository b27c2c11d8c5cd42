"""Structured output on the tiny model: every answer parses and validates, whatever the
schema, the adapter, the seed, and whoever else shares the batch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapterhub.errors import ConfigError
from adapterhub.host import AdapterHost
from adapterhub.protocols.basemodel import LoadedBase
from adapterhub.serving import Engine, EngineConfig, make_request
from adapterhub.testing.adapters import make_adapter
from adapterhub.testing.models import tiny_llama

ADAPTERS = {
    "lora": ("lora", {"r": 4, "alpha": 8}),
    "prefix": ("prefix-tuning", {"num_virtual_tokens": 4}),
    "sel": ("layer-selective", {"layers": "1"}),
}


def _base() -> LoadedBase:
    model, tok = tiny_llama(seed=0)
    return LoadedBase(name="tiny-random-llama", model=model, tokenizer=tok, path=None)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Any:
    host = AdapterHost(_base())
    root = tmp_path_factory.mktemp("grammar")
    for i, (name, (method, cfg)) in enumerate(ADAPTERS.items()):
        d: Path = root / name
        make_adapter(method, _base().model, d, config=cfg, name=f"t/{name}", version="1.0.0", seed=20 + i, scale=1.5)
        host.load(d, name=name)
    with Engine(host, EngineConfig(max_running=16)) as eng:
        yield eng


# --- a schema generator and a validator for the subset it generates ----------------------------
_leaf = st.one_of(
    st.builds(lambda n: {"type": "string", "maxLength": n}, st.integers(1, 6)),
    st.builds(lambda lo, span: {"type": "integer", "minimum": lo, "maximum": lo + span}, st.integers(-50, 50), st.integers(0, 500)),
    st.just({"type": "boolean"}),
    st.builds(lambda vals: {"type": "string", "enum": sorted(vals)}, st.sets(st.sampled_from(["x", "yes", "no", "ok!"]), min_size=1)),
    st.just({"type": "null"}),
)
_field = st.one_of(_leaf, st.builds(lambda item, n: {"type": "array", "items": item, "maxItems": n}, _leaf, st.integers(0, 3)))
_schemas = st.builds(
    lambda props, k: {"type": "object", "properties": props, "required": sorted(props)[:k], "additionalProperties": False},
    st.dictionaries(st.sampled_from(["a", "b", "name", "n2", "flag"]), _field, min_size=1, max_size=4),
    st.integers(0, 4),
)


def _valid(value: Any, schema: dict[str, Any]) -> bool:
    t = schema.get("type")
    if "enum" in schema and value not in schema["enum"]:
        return False
    if t == "object":
        props = schema["properties"]
        return (isinstance(value, dict) and set(schema.get("required", [])) <= set(value) <= set(props)
                and all(_valid(v, props[k]) for k, v in value.items()))
    if t == "array":
        return isinstance(value, list) and len(value) <= schema.get("maxItems", 10**9) and all(_valid(v, schema["items"]) for v in value)
    if t == "string":
        return isinstance(value, str) and len(value) <= schema.get("maxLength", 10**9)
    if t == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)
                and schema.get("minimum", -10**18) <= value <= schema.get("maximum", 10**18))
    if t == "boolean":
        return isinstance(value, bool)
    if t == "null":
        return value is None
    raise AssertionError(f"unexpected schema {schema}")


def _constraint(schema: dict[str, Any] | None) -> dict[str, Any]:
    return {"kind": "json_object"} if schema is None else {"kind": "json_schema", "json_schema": json.dumps(schema)}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schema=_schemas, seed=st.integers(0, 2**31), adapter=st.sampled_from([None, "lora", "prefix", "sel"]),
       temperature=st.sampled_from([0.0, 1.0, 1.5]))
def test_every_answer_parses_and_validates(engine: Engine, schema: dict[str, Any], seed: int, adapter: str | None,
                                           temperature: float) -> None:
    req = make_request("Answer in JSON.", adapter, raw=True, max_tokens=300, temperature=temperature, seed=seed,
                       constraint=_constraint(schema))
    c = engine.submit(req).result(timeout=120)
    assert c.finish_reason == "stop", (c.finish_reason, c.text)  # a finished value ends the request
    assert _valid(json.loads(c.text), schema), (c.text, schema)


def test_constrained_and_free_rows_share_a_batch(engine: Engine) -> None:
    """Free rows beside constrained ones get exactly their unconstrained tokens."""
    free = [make_request("A wonderful, moving film.", a, raw=True, max_tokens=12) for a in (None, "lora", "prefix", "sel")]
    alone = [engine.submit(r).result(timeout=60).token_ids for r in free]
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": False}
    handles = []
    for r in free:
        handles.append(engine.submit(r))
        handles.append(engine.submit(make_request("JSON please", "sel", raw=True, max_tokens=50, seed=1, temperature=1.0,
                                                  constraint=_constraint(schema))))
    results = [h.result(timeout=60) for h in handles]
    assert [c.token_ids for c in results[0::2]] == alone
    assert all(isinstance(json.loads(c.text)["ok"], bool) for c in results[1::2])
    assert engine.stats()["steps"] > 0


def test_json_object_gives_an_object(engine: Engine) -> None:
    for seed in range(3):
        c = engine.submit(make_request("{", None, raw=True, max_tokens=300, temperature=0.7, seed=seed,
                                       constraint=_constraint(None))).result(timeout=60)
        if c.finish_reason == "stop":
            assert isinstance(json.loads(c.text), dict)
        else:  # a free grammar can run past max_tokens on a random model: then it was cut, not wrong
            assert c.finish_reason == "length" and c.text.startswith("{")


def test_a_schema_that_cannot_compile_is_refused_at_submit(engine: Engine) -> None:
    bad = make_request("x", None, max_tokens=5, constraint={"kind": "json_schema", "json_schema": '{"$ref": "#/nowhere"}'})
    with pytest.raises(ConfigError, match="invalid response_format: the schema cannot be compiled: .*nowhere"):
        engine.submit(bad)
    assert engine.stats()["queue_depth"] == 0
