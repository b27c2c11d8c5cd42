from __future__ import annotations

import pytest
from adapterhub.plugins.tasks._common import (
    BaseTaskPack,
    detokenize,
    examples_sha256,
    package_dir,
    seeded_shuffle,
)

from adapterhub.errors import DataError, MissingPackageError
from adapterhub.protocols.task import Example


def test_missing_package_names_the_pip_command() -> None:
    with pytest.raises(MissingPackageError) as err:
        package_dir("no_such_data_pkg_xyz", "no-such-data-pkg==1.0", "demo-task")
    msg = str(err.value)
    assert "pip install --no-deps no-such-data-pkg==1.0" in msg
    assert "demo-task" in msg and "\n" not in msg


class _Missing(BaseTaskPack):
    name = "missing-pack"
    package = "no_such_data_pkg_xyz"
    pip_spec = "no-such-data-pkg==2.0"

    def build(self):  # type: ignore[no-untyped-def]
        package_dir(self.package, self.pip_spec, self.name)
        return {}


def test_pack_with_missing_package_raises_on_load_and_reports_unavailable() -> None:
    pack = _Missing()
    ok, why = pack.available()
    assert not ok and "pip install --no-deps no-such-data-pkg==2.0" in why
    with pytest.raises(MissingPackageError):
        pack.load("train")


def test_unknown_split_is_a_data_error() -> None:
    with pytest.raises(DataError, match="no split 'dev'"):
        _Missing().load("dev")  # type: ignore[arg-type]


def test_seeded_shuffle_is_deterministic_and_seed_dependent() -> None:
    items = list(range(100))
    assert seeded_shuffle(items, 7) == seeded_shuffle(items, 7)
    assert seeded_shuffle(items, 7) != seeded_shuffle(items, 8)
    assert sorted(seeded_shuffle(items, 7)) == items


def test_examples_hash_covers_order_and_references() -> None:
    a, b = Example("p1", "c1"), Example("p2", "c2")
    assert examples_sha256([a, b]) != examples_sha256([b, a])
    assert examples_sha256([a]) != examples_sha256([Example("p1", "c1", references=("c1", "x"))])
    assert examples_sha256([a]) == examples_sha256([Example("p1", "c1", meta={"k": 1})])


def test_detokenize_ptb_spacing() -> None:
    assert detokenize("In this paper , we ( briefly ) show it does n't fail .") == (
        "In this paper, we (briefly) show it doesn't fail."
    )
