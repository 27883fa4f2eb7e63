"""How well annotators agree where several judged the same request: Fleiss' kappa over their picks.

Items are the requests that at least two distinct annotators judged (live labels whose choice is
a candidate index, "tie" or "all_bad"; skips say nothing and are left out; an annotator counts
once per request, with their newest live label, which the store's one-live-label rule makes the
only one). The categories are the choices themselves: a candidate index is the same answer for
every annotator of that request, whatever order each saw (the store keeps candidate indices,
never display positions).

Fleiss' kappa with a varying number of raters n_i per item i:

    P_i   = sum_j n_ij (n_ij - 1) / (n_i (n_i - 1))      the share of agreeing rater pairs on item i
    P_bar = mean_i P_i                                    observed agreement
    p_j   = sum_i n_ij / sum_i n_i                        how often category j is chosen overall
    P_e   = sum_j p_j^2                                   agreement expected by chance
    kappa = (P_bar - P_e) / (1 - P_e)

1 is perfect agreement, 0 what chance gives, below 0 worse than chance. With exactly two raters
per item it is Scott's pi, the two-rater form. kappa is undefined (None) without items, or when
every rating falls in one category (P_e = 1).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass

from labeling.label_store import DEFAULT_PROFILE, SKIP, LabelStore


@dataclass
class Agreement:
    """Fleiss' kappa and what it was computed from."""

    kappa: float | None  # None: no request has two annotators, or every rating is the same category
    items: int  # requests judged by >= 2 annotators
    ratings: int  # the judgements on those requests
    observed: float | None  # P_bar
    chance: float | None  # P_e

    def to_dict(self) -> dict:
        return asdict(self)


def fleiss_kappa(items: Sequence[Sequence[Hashable]]) -> Agreement:
    """Fleiss' kappa (module docstring) of items, each the categories its raters chose (>= 2 per item).

    E.g. [["a", "a"], ["a", "b"]]: P_1 = 1, P_2 = 0, P_bar = 0.5; p_a = 0.75, p_b = 0.25,
    P_e = 0.625; kappa = (0.5 - 0.625) / 0.375 = -1/3.
    """
    items = [list(item) for item in items]
    short = [i for i, item in enumerate(items) if len(item) < 2]
    if short:
        raise ValueError(f"every item needs at least 2 ratings; item {short[0]} has {len(items[short[0]])}")
    if not items:
        return Agreement(None, 0, 0, None, None)
    totals: Counter = Counter()
    shares = []
    for item in items:
        counts = Counter(item)
        totals.update(counts)
        n = len(item)
        shares.append(sum(c * (c - 1) for c in counts.values()) / (n * (n - 1)))
    ratings = sum(totals.values())
    observed = sum(shares) / len(shares)
    chance = sum((c / ratings) ** 2 for c in totals.values())
    kappa = None if chance >= 1.0 else (observed - chance) / (1.0 - chance)
    return Agreement(kappa, len(items), ratings, observed, chance)


def pick_agreement(store: LabelStore, profile: str | None = None) -> Agreement:
    """Fleiss' kappa of the store's live picks (module docstring), optionally of one profile's requests."""
    by_request: dict[str, dict[str, str]] = defaultdict(dict)
    for row in store.label_records(include_undone=False):
        if row["choice"] == SKIP:
            continue
        if profile is not None and (row.get("profile") or DEFAULT_PROFILE) != profile:
            continue
        by_request[row["request_id"]][row["annotator"]] = row["choice"]  # oldest first: the newest stays
    return fleiss_kappa([list(choices.values()) for choices in by_request.values() if len(choices) >= 2])
