"""bench/free_rules_by_family.py: the per-prompt rules and their leave-one-family-out choice, on hand-built outcomes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from bench import free_rules_by_family as bench


def outcomes(families: dict[str, tuple[int, int]]) -> pd.DataFrame:
    """Prompts whose vote is right at beta 0 when `logprob_spread` < 1 and at beta 8 otherwise.

    families: name -> (prompts with spread 0.5, prompts with spread 2.0)."""
    rows = []
    for family, (low, high) in families.items():
        for spread in [0.5] * low + [2.0] * high:
            row = {"family": family, **{f"beta_{b:g}": 0.0 for b in bench.BETAS}, **{name: 0.0 for name in bench.PROMPT_STATS}}
            row["logprob_spread"] = spread
            row["beta_0" if spread < 1 else "beta_8"] = 1.0
            rows.append(row)
    return pd.DataFrame(rows)


def test_prompt_statistics_by_hand():
    lp = torch.tensor([-1.0, -2.0, -1.0, -3.0], dtype=torch.float64)
    keys = ["7", "8", "7", None]
    values = {name: stat(lp, keys) for name, stat in bench.PROMPT_STATS.items()}
    assert values["distinct_answers"] == 3 / 4  # "7", "8" and the unanswered one
    assert values["plurality_share"] == 2 / 4 and values["unanswered_share"] == 1 / 4
    assert values["logprob_spread"] == pytest.approx(-1.0 - (-2.0))  # torch's median of 4 is the lower middle, -2
    # the weighted vote's example in ranker.rankers.fusion: "7" holds 2 e^-1 / 0.92088
    assert values["weighted_top_share"] == pytest.approx(2 * math.exp(-1) / 0.92088, abs=1e-4)


def test_a_threshold_rule_splits_the_prompts_at_its_threshold():
    frame = outcomes({"a": (3, 3)})
    rules = bench.threshold_rules(frame, np.ones(len(frame), bool))
    fixed = {k[2]: v.tolist() for k, v in rules.items() if k[0] == "fixed"}
    assert fixed["beta_0"] == [1, 1, 1, 0, 0, 0] and fixed["beta_8"] == [0, 0, 0, 1, 1, 1]
    thresholds = sorted({k[1] for k in rules if k[0] == "logprob_spread"})
    assert thresholds == [0.5, 1.25, 2.0]  # the distinct deciles of [0.5] * 3 + [2.0] * 3 (the median interpolates)
    assert rules[("logprob_spread", 0.5, "beta_0", "beta_8")].tolist() == fixed["beta_8"]  # nothing is under 0.5
    assert rules[("logprob_spread", 1.25, "beta_0", "beta_8")].tolist() == [1] * 6
    assert rules[("logprob_spread", 2.0, "beta_8", "beta_0")].tolist() == [0] * 6


def test_the_leave_one_family_out_choice_sees_only_the_other_families():
    # a and b hold both kinds of prompt, so the split rule is learnable from them; c has only high-spread prompts
    frame = outcomes({"a": (4, 4), "b": (4, 4), "c": (0, 5)})
    best = pd.Series({"a": 50.0, "b": 50.0, "c": 100.0})  # the best reference per family, in points
    table = bench.adaptive_lofo(frame, best).set_index("left-out family")
    # Left out, c still gets the rule learnt on a and b, which is right on every c prompt
    assert table.loc["c", "rule (statistic, threshold, beta low, beta high)"] == "logprob_spread, 1.25, 0, 8"
    assert table.loc["c", "accuracy"] == 100.0 and table.loc["c", "margin"] == 0.0
    # Chosen on b and c only, the split rule is right on them too; a scores 100 against its reference's 50
    assert table.loc["a", "worst margin where chosen"] == 0.0 and table.loc["a", "margin"] == 50.0
    assert table.loc["all, in sample", "margin"] == 0.0  # worst family over all three: c, 100 - 100


def test_a_rule_that_only_fits_the_training_families_is_scored_on_the_left_out_one():
    # On a and b high-spread prompts want beta 8; on c (left out) they want beta 0: the choice cannot know
    frame = outcomes({"a": (2, 2), "b": (2, 2)})
    c = outcomes({"c": (0, 4)})
    c[["beta_0", "beta_8"]] = c[["beta_8", "beta_0"]].to_numpy()
    table = bench.adaptive_lofo(pd.concat([frame, c], ignore_index=True), pd.Series({"a": 0.0, "b": 0.0, "c": 75.0}))
    row = table.set_index("left-out family").loc["c"]
    assert row["rule (statistic, threshold, beta low, beta high)"] == "logprob_spread, 1.25, 0, 8"
    assert row["worst margin where chosen"] == 100.0  # perfect on a and b, whose references are at 0
    assert row["accuracy"] == 0.0 and row["margin"] == -75.0  # and wrong on every c prompt


def test_the_pooled_choice_weighs_the_other_families_by_their_prompts():
    # beta 1 wins on the big family a, beta 2 on the small family b; c is left out and prefers beta 2.
    accuracy = {"a": {"vote_beta_1": 60.0, "vote_beta_2": 50.0}, "b": {"vote_beta_1": 10.0, "vote_beta_2": 30.0},
                "c": {"vote_beta_1": 20.0, "vote_beta_2": 40.0}}
    prompts = {"a": 150, "b": 40, "c": 40}
    table = pd.DataFrame([{"family": f, "rule": r, "prompts": prompts[f], "accuracy": v}
                          for f, rules in accuracy.items() for r, v in [*rules.items(), ("max_logprob", 0.0)]])
    best = pd.Series({"a": 55.0, "b": 20.0, "c": 35.0})
    rows = bench.pooled_choice_lofo(table, best).set_index("left-out family")
    # Without c: beta 1 pools (60 x 150 + 10 x 40) / 190 = 49.5, beta 2 (50 x 150 + 30 x 40) / 190 = 45.8
    assert rows.loc["c", "rule chosen on the others"] == "vote_beta_1"
    assert rows.loc["c", "pooled accuracy there"] == pytest.approx(9400 / 190)
    assert rows.loc["c", "accuracy"] == 20.0 and rows.loc["c", "margin"] == -15.0  # c wanted beta 2
    # Without a the two small families decide: beta 2 (35.0 against 15.0), which a does not want
    assert rows.loc["a", "rule chosen on the others"] == "vote_beta_2" and rows.loc["a", "margin"] == -5.0
    assert "max_logprob" not in set(rows["rule chosen on the others"])  # only the vote rules are candidates
