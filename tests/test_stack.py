"""The software stack: verified versions, the KV-cache self-check, `nex-causal doctor`, and a zoo
that refuses a checkpoint whose accuracy moved."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import nex_causal.versions as stack
from nex_causal.cli import main
from nex_causal.errors import NexError
from nex_causal.models.loading import check_kv_cache, kv_cache_error
from nex_causal.nex.weights import save_weights

SHARED = Path(__file__).resolve().parents[2] / "shared"


class CacheDropped:
    """The bridge, except that its forward pass never sees the KV cache (as with transformers 5.24)."""

    def __init__(self, bridge):
        self.bridge = bridge

    def __getattr__(self, name):
        return getattr(self.bridge, name)

    def __call__(self, *args, **kwargs):
        kwargs.pop("past_key_values", None)
        kwargs.pop("use_cache", None)
        return self.bridge(*args, **kwargs)


def test_the_kv_self_check_passes_on_the_bridge_and_fails_when_the_cache_is_ignored(tiny_qwen3_bridge):
    assert kv_cache_error(tiny_qwen3_bridge) < 1e-5
    check_kv_cache(tiny_qwen3_bridge)
    broken = CacheDropped(tiny_qwen3_bridge)
    assert kv_cache_error(broken) > 1e-2
    with pytest.raises(NexError, match=r"the KV cache is not used.*transformers \d.*transformer-lens \d.*Fix: pip"):
        check_kv_cache(broken)


@pytest.mark.parametrize("version, ok", [("5.20.0", True), ("5.23.0", True), ("5.23.1.dev0", True),
                                         ("5.24.0", False), ("5.19.2", False), ("6.0.0rc1", False)])
def test_the_verified_range_of_transformers(version, ok):
    assert stack.verified("transformers", version) is ok
    assert stack.verified("numpy", version)  # packages without a range are not checked


def test_an_unverified_transformers_is_refused_in_one_line_unless_allowed(monkeypatch):
    real = stack.installed
    monkeypatch.setattr(stack, "installed", lambda p: "5.24.0" if p == "transformers" else real(p))
    with pytest.raises(NexError, match=r"transformers 5\.24\.0 is installed.*verified only on transformers "
                                       r">=5\.20\.0,<5\.24\.0.*pip install"):
        stack.check_transformers()
    monkeypatch.setenv(stack.ALLOW_UNVERIFIED, "1")
    stack.check_transformers()


def test_the_result_stack_names_every_package_that_changes_numbers():
    versions = stack.result_stack()
    assert set(versions) == {"nex-causal", *stack.RESULT_PACKAGES}
    assert versions["torch"] and versions["transformers"] and versions["numpy"]


@pytest.mark.skipif(not (SHARED / "reference").exists(), reason="../shared/reference absent")
def test_doctor_passes_here_and_fails_when_a_check_fails(tmp_path, monkeypatch, capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "all checks passed" in out and "[ok  ] KV cache" in out and "GMF 0.998311" in out
    for package in ("torch", "transformers", "transformer-lens", "numpy", "scikit-learn", "hmmlearn", "mergekit"):
        assert f"\n{package} " in out
    # a reference example whose weights were tampered with: the NEX check must fail the doctor
    fake = tmp_path / "shared" / "reference"
    shutil.copytree(SHARED / "reference" / "nex_example_cache", fake / "nex_example_cache")
    weights = np.load(SHARED / "reference" / "nex_example_weights.npz")["weights"].copy()
    save_weights(fake / "nex_example_weights.npz", -np.abs(weights))
    monkeypatch.setenv("NEX_CAUSAL_SHARED", str(tmp_path / "shared"))
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] NEX reference example" in out and "cannot be trusted" in out


def test_the_zoo_refuses_a_checkpoint_whose_accuracy_moved(tmp_path):
    from nex_causal.zoo.build import FAMILY_FILE, META_FILE, build, checkpoints_of

    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(checkpoints_of("seek"), checkpoints)
    meta = json.loads((checkpoints / "base" / META_FILE).read_text())
    assert meta["recorded_eval"]["accuracy"] == pytest.approx(0.75)
    meta["recorded_eval"]["accuracy"] = 0.5  # what a stack that computes other numbers would see
    (checkpoints / "base" / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(NexError, match=r"zoo checkpoint base scores greedy accuracy 0\.750 here but 0\.500 when its "
                                       r"weights were committed.*nex-causal doctor"):
        build(tmp_path / "zoo", organism="seek", checkpoints=checkpoints, progress=False)
    assert not (tmp_path / "zoo" / FAMILY_FILE).exists()
