"""The method table: every selection method's name, its label for people, and the order to show them in.

One table for every place that lists methods (the README tables, the plots' legends, the CLI's
`eval` table, bench/ranker_vs_rm.py): the ceiling first, then the rankers, the reward models, and
the selection rules that need no training, from the strongest expected to the weakest.
"""

from __future__ import annotations

from collections.abc import Iterable

METHOD_LABELS = {  # name (as ranker.evaluation.selection and the experiments report it) -> label, in display order
    "oracle": "oracle (any correct)",
    "list_ranker": "ListRanker",
    "point_ranker": "PointRanker",
    "list_ranker_hidden": "ListRanker, hidden states only",
    "point_ranker_hidden": "PointRanker, hidden states only",
    "beam_search": "beam search",
    "rm_base": "RM (base, LoRA)",
    "rm_small": "RM (small, MiniLM)",
    "list_ranker_vote": "ListRanker-weighted majority vote",
    "point_ranker_vote": "PointRanker-weighted majority vote",
    "logprob_vote": "log-prob-weighted majority vote",
    "self_certainty_borda": "self-certainty Borda vote",
    "deepconf_low": "DeepConf-low (top 10%, weighted vote)",
    "deepconf_high": "DeepConf-high (top 90%, weighted vote)",
    "deepconf_vote": "DeepConf weighted vote (all)",
    "max_group_confidence": "max lowest-group confidence",
    "max_self_certainty": "max self-certainty",
    "max_logprob": "max mean log-prob",
    "majority": "majority vote",
    "first": "first sample",
    "random": "random",
    "per_sample": "per-sample accuracy",  # the mean label of all candidates: no pick, so no line or table row of its own
}
NOT_SELECTORS = ("per_sample",)  # methods of the table that pick no candidate
# The training-free selectors from the literature that the generalisation claim is measured against
# (ranker.evaluation.selection): max mean log-prob, self-certainty, DeepConf's variants, and the
# log-prob-weighted majority vote (the fused rankers' fixed fallback rule, ranker.rankers.fallback).
FREE_BASELINES = ("max_logprob", "max_self_certainty", "self_certainty_borda", "max_group_confidence", "deepconf_vote",
                  "deepconf_low", "deepconf_high", "logprob_vote")
DEEPCONF_VARIANTS = ("max_group_confidence", "deepconf_vote", "deepconf_low", "deepconf_high")


def method_label(name: str) -> str:
    """The label of a method; an unknown name is its own label."""
    return METHOD_LABELS.get(name, name)


def display_order(names: Iterable[str], selectors_only: bool = False) -> list[str]:
    """`names` in the table's order, then the names the table does not know, sorted.

    selectors_only: keep only the table's methods that pick a candidate (what the README's main
    table and the scaling plot show).
    """
    names = set(names)
    if selectors_only:
        return [n for n in METHOD_LABELS if n in names and n not in NOT_SELECTORS]
    return [n for n in METHOD_LABELS if n in names] + sorted(names - set(METHOD_LABELS))
