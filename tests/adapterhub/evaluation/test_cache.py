"""The base-output cache: stable keys, atomic files, misses on damage."""

from __future__ import annotations

import json

from adapterhub.evaluation.cache import PredictionCache, atomic_write_json


def test_key_is_stable_and_sensitive():
    a = PredictionCache.key({"base": "x", "task": "t", "limit": 3, "generation": {"template": "chat", "batch_size": 8}})
    b = PredictionCache.key({"generation": {"batch_size": 8, "template": "chat"}, "limit": 3, "task": "t", "base": "x"})
    assert a == b and len(a) == 64
    assert a != PredictionCache.key({"base": "x", "task": "t", "limit": 4, "generation": {"template": "chat", "batch_size": 8}})
    assert a != PredictionCache.key({"base": "x", "task": "t", "limit": 3, "generation": {"template": "plain", "batch_size": 8}})


def test_roundtrip_and_damage_is_a_miss(tmp_path):
    cache = PredictionCache(tmp_path)
    key = cache.key({"k": 1})
    assert cache.get(key) is None
    cache.put(key, ["a", "", "ünï"], {"task": "t"})
    assert cache.get(key) == ["a", "", "ünï"]
    assert (cache.hits, cache.misses) == (1, 1)
    path = cache.path(key)
    assert path.is_relative_to(tmp_path) and path.parent.name == key[:2]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left
    path.write_text("{truncated")
    assert cache.get(key) is None
    path.write_text(json.dumps({"key": "other", "predictions": ["x"]}))
    assert cache.get(key) is None  # a file under the wrong name is not trusted
    cache.put_value(key, 12.5)
    assert cache.get_value(key) == 12.5


def test_default_root_is_eval_cache_dir(home):
    assert PredictionCache().root == home / "eval-cache"


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "sub" / "x.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_json(target, {"b": [1, 2]})
    assert json.loads(target.read_text()) == {"b": [1, 2]}
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.json"]
