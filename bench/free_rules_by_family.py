"""Could any fixed training-free rule pass issue 14's per-family test? The ceiling of the fallback.

Out of its training families the fused ranker falls back to one fixed free-signal rule
(ranker.rankers.fallback). Leave-one-family-out asks it to beat max mean log-prob, max
self-certainty and DeepConf's best variant on average, and to lose to none of them by more than
`--margin` points on any single left-out family. A free rule does not depend on the training
families, so its accuracy on a left-out family's held-out prompts is its accuracy on that
family's prompts here (training and held-out, as leave-one-family-out scores them). This script scores every free selector of
`ranker.evaluation.selection` and the log-prob-weighted vote at several confidence temperatures
beta (beta 0: majority vote with log-prob tie-breaks; large beta: max log-prob), per family, on
the store, and the weighted vote plus m x mean log-prob (the fallback's rule with a
larger log-prob weight), and prints for each rule its mean and the families where it loses by more
than the margin. A rule with no such family would let a fallback that reaches it fully pass the
test; none means no choice of fixed fallback can.

"DeepConf's best variant" is the DeepConf variant with the best mean over the families, as in
`python -m ranker report`'s leave-one-family-out verdict.

The second part asks whether a rule chosen *per prompt* could pass instead: the vote's beta is
picked by a threshold on a statistic of the prompt's own candidates (how spread its answers and
log-probs are; `PROMPT_STATS`), beta_low below the threshold and beta_high at or above it. The
rule (statistic, threshold at a decile, beta_low, beta_high, or one fixed beta) is chosen on all
families but one, by the issue's own criterion there (the worst family's margin over the best
reference, then the mean), and scored on the family left out, as leave-one-family-out would
choose it. The same choice made on all families (in sample, so optimistic) is printed beside it.

The third part asks what the fallback's own way of choosing would give with more rules to choose
from: one fixed vote rule (any beta, any added log-prob weight) picked by its prompt-weighted
accuracy on the other families, as `ranker.rankers.fallback` picks its rule by pooled best-of-N on
held-out training clusters, and scored on the family left out.

    PYTHONPATH=. .venv/bin/python bench/free_rules_by_family.py --store data/suite
"""

from __future__ import annotations

import argparse
import itertools
import platform
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ranker.capture.feature_store import FeatureStore  # noqa: E402
from ranker.evaluation.methods import DEEPCONF_VARIANTS, FREE_BASELINES  # noqa: E402
from ranker.evaluation.selection import evaluate_selection  # noqa: E402
from ranker.rankers.fusion import weighted_vote_log_shares  # noqa: E402

BETAS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
# The fallback's rule with more weight on the mean log-prob: weighted_vote + m x mean_logprob (beta 1),
# between the weighted vote (m -> 0) and max log-prob (m -> inf); expressible with the fusion's signals.
LOGPROB_WEIGHTS = (0.25, 0.5, 1.0, 2.0)
REFERENCES = ("max_logprob", "max_self_certainty")  # and DeepConf's best variant


def vote_scores(store: FeatureStore, beta: float, logprob_weight: float = 1e-3) -> torch.Tensor:
    """(P, N) log-prob-weighted vote log shares at temperature `beta` + logprob_weight x mean log-prob
    (the default 1e-3 only breaks ties)."""
    rows = []
    for lp, keys in zip(store.column("mean_logprob"), store.column("vote_key")):
        lp = torch.tensor(lp, dtype=torch.float64)
        rows.append(weighted_vote_log_shares(lp, keys, beta) + logprob_weight * lp)
    return torch.stack(rows).float()


def family_accuracy(store: FeatureStore) -> pd.DataFrame:
    """One row per (family, rule): best-of-N accuracy (%) over all N candidates of the family's prompts."""
    rows = []
    for family in dict.fromkeys(store.families):
        part = store.subset([i for i, p in enumerate(store.problems) if p.family == family])
        scores = {f"vote_beta_{beta:g}": vote_scores(part, beta) for beta in BETAS}
        scores.update({f"vote_plus_{m:g}_logprob": vote_scores(part, 1.0, m) for m in LOGPROB_WEIGHTS})
        accuracy = evaluate_selection(part, scores, draws=1)
        rows += [{"family": family, "rule": rule, "accuracy": 100 * value, "prompts": len(part.problems)}
                 for rule, value in accuracy.items() if rule in FREE_BASELINES + ("majority", *scores, "oracle")]
    return pd.DataFrame(rows)


# Statistics of one prompt's candidates, from what the fallback sees at scoring time: (K,) mean log-probs
# (float64) and K answer keys (None: no answer). They measure how much the answers agree and how much
# the log-probs separate the candidates, the two things that decide whether a vote or max log-prob wins.
PROMPT_STATS = {
    "distinct_answers": lambda lp, keys: (len({k for k in keys if k is not None}) + keys.count(None)) / len(keys),
    "plurality_share": lambda lp, keys: max(Counter(k for k in keys if k is not None).values(), default=0) / len(keys),
    "weighted_top_share": lambda lp, keys: float(weighted_vote_log_shares(lp, keys, 1.0).exp().max()),
    "logprob_spread": lambda lp, keys: float(lp.max() - lp.median()),
    "unanswered_share": lambda lp, keys: keys.count(None) / len(keys),
}


def prompt_outcomes(store: FeatureStore) -> pd.DataFrame:
    """One row per prompt: its family, whether the vote at each beta of BETAS picks a correct
    candidate (columns `beta_<b>`, 0/1), and each statistic of PROMPT_STATS."""
    labels = store.labels()  # (P, N)
    frame = pd.DataFrame({"family": [problem.family for problem in store.problems]})
    for beta in BETAS:
        picks = vote_scores(store, beta).argmax(dim=1, keepdim=True)  # (P, 1)
        frame[f"beta_{beta:g}"] = labels.gather(1, picks).squeeze(1).float().numpy()
    signals = [(torch.tensor(lp, dtype=torch.float64), list(keys))
               for lp, keys in zip(store.column("mean_logprob"), store.column("vote_key"))]
    for name, stat in PROMPT_STATS.items():
        frame[name] = [stat(lp, keys) for lp, keys in signals]
    return frame


def threshold_rules(outcomes: pd.DataFrame, train: np.ndarray) -> dict[tuple, np.ndarray]:
    """Every per-prompt rule -> (P,) 0/1 correctness of its picks on all prompts. A rule is
    (statistic, threshold, beta_low, beta_high), thresholds at the deciles of the `train` prompts
    (a (P,) bool mask), or ("fixed", nan, beta, beta)."""
    betas = [f"beta_{beta:g}" for beta in BETAS]
    rules = {("fixed", float("nan"), b, b): outcomes[b].to_numpy() for b in betas}
    for name in PROMPT_STATS:
        values = outcomes[name].to_numpy()
        for threshold in np.unique(np.quantile(values[train], np.linspace(0.1, 0.9, 9))):
            for low, high in itertools.permutations(betas, 2):
                rules[(name, float(threshold), low, high)] = np.where(values < threshold, outcomes[low], outcomes[high])
    return rules


def worst_and_mean_margin(correct: np.ndarray, families: np.ndarray, mask: np.ndarray, best_reference: pd.Series) -> tuple[float, float]:
    """(the worst family's margin over its best reference, the mean accuracy over families), in points, on `mask`."""
    accuracy = pd.Series(100 * correct[mask]).groupby(families[mask]).mean()
    return float((accuracy - best_reference[accuracy.index]).min()), float(accuracy.mean())


def adaptive_lofo(outcomes: pd.DataFrame, best_reference: pd.Series) -> pd.DataFrame:
    """Per family: the per-prompt rule chosen on the other families (worst margin, then mean), and its
    accuracy and margin on the left-out family; a last row ("all, in sample") chooses on every family."""
    families = outcomes.family.to_numpy()
    rows = []
    for left_out in [*dict.fromkeys(families), None]:
        train = families != left_out
        rules = threshold_rules(outcomes, train)
        rule = max(rules, key=lambda r: worst_and_mean_margin(rules[r], families, train, best_reference))
        worst_train, _ = worst_and_mean_margin(rules[rule], families, train, best_reference)
        scored = ~train if left_out is not None else train
        accuracy = pd.Series(100 * rules[rule][scored]).groupby(families[scored]).mean()
        gaps = accuracy - best_reference[accuracy.index]
        rows.append({"left-out family": left_out or "all, in sample", "rule (statistic, threshold, beta low, beta high)":
                     f"{rule[0]}, {rule[1]:.3g}, {rule[2].removeprefix('beta_')}, {rule[3].removeprefix('beta_')}",
                     "worst margin where chosen": worst_train, "accuracy": accuracy.mean(),
                     "best reference": best_reference[accuracy.index].mean(), "margin": gaps.min()})
    return pd.DataFrame(rows)


def pooled_choice_lofo(table: pd.DataFrame, best_reference: pd.Series) -> pd.DataFrame:
    """Per family: the fixed vote rule (`vote_beta_*`, `vote_plus_*`) with the best prompt-weighted
    accuracy on the other families, the fallback's own criterion (pooled best-of-N on held-out
    training clusters, ranker.rankers.fallback), and its accuracy and margin on the left-out family.

    table: family, rule, prompts, accuracy (points), as `family_accuracy` pooled over the splits.
    """
    wide = table.pivot(index="family", columns="rule", values="accuracy")
    prompts = table.groupby("family").prompts.first()
    rules = [rule for rule in wide.columns if rule.startswith("vote_")]
    rows = []
    for left_out in wide.index:
        rest = wide.index != left_out
        pooled = {rule: float((wide.loc[rest, rule] * prompts[rest]).sum() / prompts[rest].sum()) for rule in rules}
        rule = max(rules, key=lambda r: (round(pooled[r], 9), -rules.index(r)))  # ties: the first listed
        rows.append({"left-out family": left_out, "rule chosen on the others": rule, "pooled accuracy there": pooled[rule],
                     "accuracy": float(wide.loc[left_out, rule]), "best reference": float(best_reference[left_out]),
                     "margin": float(wide.loc[left_out, rule] - best_reference[left_out])})
    return pd.DataFrame(rows)


def verdict(table: pd.DataFrame, margin: float) -> pd.DataFrame:
    """Per rule: its mean over families, its mean margin over each reference, and the families it loses by > margin."""
    wide = table.pivot(index="family", columns="rule", values="accuracy")
    best_deepconf = max(DEEPCONF_VARIANTS, key=lambda name: wide[name].mean())
    references = (*REFERENCES, best_deepconf)
    out = []
    for rule in wide.columns:
        if rule == "oracle":
            continue
        gaps = {ref: wide[rule] - wide[ref] for ref in references}
        fails = [f"{family} {gap:+.1f} vs {ref}" for ref in references for family, gap in gaps[ref].items() if gap < -margin]
        out.append({"rule": rule, "mean": wide[rule].mean(), **{f"vs {ref}": gaps[ref].mean() for ref in references},
                    "families lost by more than the margin": "; ".join(fails) or "none"})
    return pd.DataFrame(out).sort_values("mean", ascending=False)


def markdown(frame: pd.DataFrame) -> str:
    """A markdown table of `frame` (its index as the first column when it is named); floats to one decimal."""
    frame = frame.reset_index() if frame.index.name else frame

    def cell(value) -> str:
        if not isinstance(value, float):
            return str(value)
        value = round(value, 1) + 0.0  # + 0.0 turns -0.0 into 0.0
        return f"{value:+.1f}" if value < 0 else f"{value:.1f}"

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|---" * len(frame.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", default="data/suite", help="folder holding test/ (default data/suite)")
    parser.add_argument("--margin", type=float, default=2.0, help="the per-family tolerance in points (default 2)")
    parser.add_argument("--out", default="assets/results/free_rules_by_family.csv", help="CSV of the per-family accuracies")
    args = parser.parse_args(argv)
    # Leave-one-family-out scores a left-out family on all of its prompts, training and held-out: so does this.
    stores = [FeatureStore.load(Path(args.store) / split) for split in ("train", "test")]
    if not all(store.has_signals for store in stores):
        raise SystemExit(f"{args.store} has no confidence signals: rebuild it (see the README)")
    parts = pd.concat([family_accuracy(store) for store in stores])
    parts["correct"] = parts.accuracy * parts.prompts
    table = parts.groupby(["family", "rule"], as_index=False)[["correct", "prompts"]].sum()
    table["accuracy"] = table.correct / table.prompts
    table = table.drop(columns="correct")
    store = stores[1]
    table.to_csv(args.out, index=False)
    print(f"# {sum(len(x.problems) for x in stores)} prompts (training and held-out), {len(set(store.families))} families, "
          f"N={store.num_candidates}; "
          f"{platform.machine()}, {platform.system()}; per-family accuracies in {args.out}")
    print(markdown(table.pivot(index="rule", columns="family", values="accuracy")))
    print()
    print(markdown(verdict(table, args.margin)))
    # The per-prompt rules, chosen leave-one-family-out against each family's best reference
    wide = table.pivot(index="family", columns="rule", values="accuracy")
    best_deepconf = max(DEEPCONF_VARIANTS, key=lambda name: wide[name].mean())
    best_reference = wide[[*REFERENCES, best_deepconf]].max(axis=1)
    adaptive = adaptive_lofo(pd.concat([prompt_outcomes(s) for s in stores], ignore_index=True), best_reference)
    print()
    print(f"# per-prompt rules, chosen on the other families (margin: the left-out family's accuracy minus the best of "
          f"{', '.join((*REFERENCES, best_deepconf))}; the last row's worst family)")
    print(markdown(adaptive))
    print()
    print("# one fixed vote rule, chosen on the other families by prompt-weighted accuracy (the fallback's criterion)")
    print(markdown(pooled_choice_lofo(table, best_reference)))


if __name__ == "__main__":
    main()
