"""bench/fallback_by_family.py: forcing a fitted ranker's fallback share to 0 or 1, without touching the ranker."""

from __future__ import annotations

import torch

from bench import fallback_by_family as bench
from ranker.rankers.estimator import LanguageRanker
from tests.ranker.rankers.fallback_points import on_support
from tests.ranker.rankers.test_fallback import _vote_wins_queries


def test_with_share_forces_the_fallback_everywhere_or_nowhere():
    queries = _vote_wins_queries()
    ranker = LanguageRanker(kind="point", seed=0, projection_dim=16, epochs=1, batch_size=32,
                            fusion_cluster_rules=False).fit(queries)  # so that the near regime differs from the far one
    fallback = ranker.fusion.fallback
    assert fallback is not None
    q, near = queries[1], on_support(fallback)
    everywhere, nowhere = bench.with_share(ranker, 1), bench.with_share(ranker, 0)
    assert everywhere.fusion.fallback.share(everywhere.fusion.fallback.distance(near)) == 1.0
    assert nowhere.fusion.fallback is None
    # On the support the fitted ranker uses its fused weights (share 0), so it scores as the one without fallback
    fused = ranker.score(near, q.responses, q.mean_logprob, q.vote_keys)
    assert torch.equal(fused, nowhere.score(near, q.responses, q.mean_logprob, q.vote_keys))
    # ... and share 1 scores every instruction with the fallback's weights alone (ranker weight 0)
    rule = everywhere.score(near, q.responses, q.mean_logprob, q.vote_keys)
    assert not torch.equal(rule, fused)
    assert torch.equal(rule, everywhere.score(-near, q.responses, q.mean_logprob, q.vote_keys))  # the instruction no longer matters
    assert ranker.fusion.fallback is fallback and fallback.near >= -0.5  # the original is untouched
