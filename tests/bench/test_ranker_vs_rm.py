"""bench/ranker_vs_rm.py: the same prompts for every method, one method's child run, and the printed ratios.

The RM children are not run here (minutes on CPU); the benchmark itself is a script, run by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bench import ranker_vs_rm as bench
from ranker.capture.feature_store import FeatureStore
from ranker.rankers.store_training import train_on_store

FIXTURE = Path(__file__).resolve().parents[1] / "assets" / "frozen_suite"  # 150 train / 100 test prompts, 5 families, layer 18


def test_ranker_child_reports_its_costs_and_the_scores_of_the_ranker_it_trained(tmp_path):
    result_file = tmp_path / "list_ranker.json"
    args = bench.parse_args(["--store", str(FIXTURE), "--train-prompts-per-family", "4", "--test-prompts-per-family", "2",
                             "--scoring-repeats", "1", "--scoring-prompts", "2", "--method", "list_ranker",
                             "--result", str(result_file)])
    bench.run_method(args)
    result = json.loads(result_file.read_text())

    train, test, layer = bench.load_stores(args)
    assert (layer, len(train.problems), len(test.problems)) == (18, 20, 10)
    ranker = train_on_store(train, layer, kind="list", seed=0)  # same data and seed: the same ranker
    assert torch.allclose(torch.tensor(result["scores"]), ranker.score_store(test), atol=1e-5)
    parameters = sum(p.numel() for p in ranker.model_.parameters())
    assert result["trainable_params"] == result["loaded_params"] == parameters
    assert len(result["score_timings"]) == 2 and result["score_seconds_per_prompt"] > 0
    assert result["train_seconds"] >= result["train_loop_seconds"] > 0
    assert result["peak_rss_mb"] >= result["rss_after_data_mb"] > 0


def test_last_line_gives_rm_base_over_list_ranker():
    results = {"list_ranker": {"score_seconds_per_prompt": 0.002, "train_seconds": 4.0},
               "rm_base": {"score_seconds_per_prompt": 4.0, "train_seconds": 20.0}}
    assert bench.ratios_line(results) == "ratios: RM (base, LoRA) scoring / ranker scoring = 2000x; RM (base, LoRA) training / ranker training = 5.0x"
    results["rm_small"] = results.pop("rm_base")
    assert bench.ratios_line(results).endswith("= 5.0x (RM (base) skipped)")
