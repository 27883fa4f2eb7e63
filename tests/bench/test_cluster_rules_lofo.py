"""bench/cluster_rules_lofo.py: the shipped configuration with and without cluster rules, on a small synthetic store."""

from __future__ import annotations

import pandas as pd
import pytest

from bench import cluster_rules_lofo as bench
from ranker.experiments.runners import _fused_rankers
from tests.ranker.experiments.test_runners import two_layer_store


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    two_layer_store(160, skip=0).save(root / "train")
    two_layer_store(80, skip=160).save(root / "test")
    return root


def test_the_variants_reach_the_rankers(store_dir):
    from ranker.capture.feature_store import FeatureStore

    train = FeatureStore.load(store_dir / "train")
    for variant, hyperparams in bench.VARIANTS.items():
        (ranker,) = _fused_rankers(train, 2, 0, ("point",), hyperparams).values()
        assert ranker.fusion_config_.cluster_rules is hyperparams["fusion_cluster_rules"], variant


def test_bench_prints_both_variants_in_family_and_left_out(store_dir, capsys):
    out = store_dir / "rules.md"
    bench.main(["--store", str(store_dir), "--layer", "2", "--seeds", "1", "--kinds", "point", "--out", str(out)])
    text = out.read_text()
    assert text == capsys.readouterr().out
    assert text.count("| point_ranker, with cluster rules |") == 2 and text.count("| point_ranker, without |") == 2
    assert "### verdict, with cluster rules" in text and "### verdict, without" in text
    rows = pd.read_csv(out.with_suffix(".csv"))
    assert set(zip(rows.setting, rows.variant)) == {(s, v) for s in ("in family", "left out") for v in bench.VARIANTS}
    # The references need no training: the same in both variants, and what the table prints.
    logprob = rows[rows.method == "max_logprob"].groupby(["setting", "variant", "family"]).accuracy.mean().unstack("variant")
    assert (logprob["with cluster rules"] == logprob["without"]).all()
    left_out = logprob.xs("left out")["without"]
    line = next(l for l in text.split("## left out")[1].splitlines() if l.startswith("| max_logprob |"))
    assert line == "| max_logprob | " + " | ".join(f"{100 * v:.1f}" for v in [*left_out, left_out.mean()]) + " |"
