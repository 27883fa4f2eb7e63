"""The one method table: display order and labels."""

from ranker.evaluation.methods import METHOD_LABELS, display_order, method_label


def test_display_order_puts_known_methods_in_table_order_then_the_rest_sorted():
    names = ["random", "zeta", "per_sample", "list_ranker", "oracle", "alpha", "rm_base", "first"]
    assert display_order(names) == ["oracle", "list_ranker", "rm_base", "first", "random", "per_sample", "alpha", "zeta"]
    assert display_order(names, selectors_only=True) == ["oracle", "list_ranker", "rm_base", "first", "random"]
    assert list(METHOD_LABELS)[:3] == ["oracle", "list_ranker", "point_ranker"]


def test_labels():
    assert method_label("max_logprob") == "max mean log-prob" and method_label("rm_base") == "RM (base, LoRA)"
    assert method_label("my_ranker") == "my_ranker"
