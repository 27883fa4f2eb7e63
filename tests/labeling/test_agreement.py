"""Fleiss' kappa (labeling.agreement), against hand-computed values, and over a label store's picks."""

import pytest

from labeling.agreement import fleiss_kappa, pick_agreement
from labeling.label_store import LabelStore
from tests.labeling.synthetic import record, synthetic_queries


def test_fleiss_kappa_matches_the_hand_computed_examples():
    # [["a","a"],["a","b"]]: P_1 = 1, P_2 = 0, P_bar = 0.5; p_a = 3/4, p_b = 1/4, P_e = 10/16; kappa = -1/3.
    result = fleiss_kappa([["a", "a"], ["a", "b"]])
    assert (result.items, result.ratings) == (2, 4)
    assert result.observed == pytest.approx(0.5) and result.chance == pytest.approx(0.625)
    assert result.kappa == pytest.approx(-1 / 3)
    # Three raters on item 1 (x, x, y: P_1 = 2/6), two on item 2 (y, y: P_2 = 1): P_bar = 2/3;
    # p_x = 2/5, p_y = 3/5, P_e = 13/25; kappa = (2/3 - 13/25) / (12/25) = 11/36.
    assert fleiss_kappa([["x", "x", "y"], ["y", "y"]]).kappa == pytest.approx(11 / 36)
    # Perfect agreement over two categories is 1; one category only is undefined.
    assert fleiss_kappa([["0", "0"], ["1", "1"]]).kappa == pytest.approx(1.0)
    assert fleiss_kappa([["0", "0"], ["0", "0"]]).kappa is None
    assert fleiss_kappa([]).kappa is None
    with pytest.raises(ValueError, match="item 1 has 1"):
        fleiss_kappa([["a", "b"], ["a"]])


def test_pick_agreement_reads_candidate_indices_whatever_order_each_annotator_saw(tmp_path):
    store = LabelStore(tmp_path)
    queries = synthetic_queries(3, seed=0)
    requests = [record(store, q) for q in queries]
    # Request 0: alice and bob pick candidate 2, shown at different positions; carol skips (left out).
    store.add_label(requests[0], 2, "alice", [0, 1, 2, 3, 4, 5])
    store.add_label(requests[0], 2, "bob", [5, 4, 3, 2, 1, 0])
    store.add_label(requests[0], "skip", "carol", [0, 1, 2, 3, 4, 5])
    # Request 1: alice picks 0, bob picks 1 after first picking 0 (his newer label replaces it).
    store.add_label(requests[1], 0, "alice", [0, 1, 2, 3, 4, 5])
    store.add_label(requests[1], 0, "bob", [0, 1, 2, 3, 4, 5])
    store.add_label(requests[1], 1, "bob", [0, 1, 2, 3, 4, 5])
    # Request 2: one annotator only: not an item.
    store.add_label(requests[2], 3, "alice", [0, 1, 2, 3, 4, 5])
    result = pick_agreement(store)
    # Items [2, 2], [0, 1]: P_bar = 0.5; p_2 = 1/2, p_0 = p_1 = 1/4, P_e = 3/8; kappa = 0.2.
    assert (result.items, result.ratings) == (2, 4)
    assert result.kappa == pytest.approx(0.2)
