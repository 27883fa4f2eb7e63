import pytest
import torch

from ranker.rankers.networks import InputNorm, ListRanker, PointRanker, RankerConfig, build_ranker

H = 32


def tiny(kind="list", **kw) -> RankerConfig:
    return RankerConfig(kind=kind, hidden_size=H, projection_dim=16, num_heads=2, **kw)


def inputs(B=3, K=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, H, generator=g), torch.randn(B, K, H, generator=g)


@pytest.mark.parametrize("kind", ["list", "point"])
def test_forward_shapes(kind):
    torch.manual_seed(0)
    model = build_ranker(tiny(kind))
    assert isinstance(model, ListRanker if kind == "list" else PointRanker)
    instruction, responses = inputs()
    scores = model(instruction, responses)
    assert scores.shape == (3, 5)
    assert scores.dtype == torch.float32
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2, [True] + [False] * 4])
    masked = model(instruction, responses, mask)
    assert (masked[~mask] == 0).all()


@pytest.mark.parametrize("kind,lo,hi", [("list", 300_000, 330_000), ("point", 280_000, 310_000)])
def test_parameter_count_at_llama_width(kind, lo, hi):
    # Paper: ListRanker 0.30M and PointRanker 0.28M at H=4096 with projection 64; the limit is 0.5M.
    model = build_ranker(RankerConfig(kind=kind, hidden_size=4096, projection_dim=64))
    n = model.num_parameters()
    assert lo < n < hi
    assert n < 500_000


def test_list_ranker_ignores_padding():
    torch.manual_seed(0)
    model = build_ranker(tiny("list")).eval()
    instruction, responses = inputs(B=2, K=6)
    alone = model(instruction[:1], responses[:1, :4])  # query 0 with its 4 real candidates
    garbage = responses.clone()
    garbage[0, 4:] = 1e3  # padding content must not leak into real scores
    mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    batched = model(instruction, garbage, mask)
    torch.testing.assert_close(batched[0, :4], alone[0], rtol=1e-5, atol=1e-5)


def test_list_ranker_is_permutation_equivariant_and_candidates_interact():
    torch.manual_seed(0)
    model = build_ranker(tiny("list")).eval()
    instruction, responses = inputs(B=1, K=5)
    perm = torch.tensor([3, 0, 4, 1, 2])
    scores = model(instruction, responses)
    torch.testing.assert_close(model(instruction, responses[:, perm]), scores[:, perm], rtol=1e-5, atol=1e-5)
    # Changing another candidate changes candidate 0's score in a ListRanker, not in a PointRanker.
    changed = responses.clone()
    changed[0, 4] += 5.0
    assert not torch.allclose(model(instruction, changed)[0, 0], scores[0, 0])
    point = build_ranker(tiny("point")).eval()
    torch.testing.assert_close(point(instruction, changed)[0, :4], point(instruction, responses)[0, :4])


@pytest.mark.parametrize("kind", ["list", "point"])
def test_use_instruction_false_never_reads_the_instruction(kind):
    torch.manual_seed(0)
    instruction, responses = inputs()
    without = build_ranker(tiny(kind, use_instruction=False)).eval()
    torch.testing.assert_close(without(instruction, responses), without(instruction * 0 + 7, responses))
    with_ = build_ranker(tiny(kind)).eval()
    assert not torch.allclose(with_(instruction, responses), with_(instruction * 0 + 7, responses))


def test_relevance_follows_label_type():
    assert tiny(label_type="binary").relevance == "cosine"
    assert tiny(label_type="real").relevance == "interaction"
    assert tiny(label_type="real", relevance="cosine").relevance == "cosine"
    torch.manual_seed(0)
    instruction, responses = inputs()
    for relevance in ("linear", "interaction"):
        model = build_ranker(tiny("point", label_type="real", relevance=relevance))
        assert model(instruction, responses).shape == (3, 5)


def test_paper_linear_relevance_lets_a_point_ranker_shift_but_not_reorder():
    # With s_k = W . concat(i~, r~_k), a PointRanker's instruction adds the same amount to every
    # candidate; the interaction form can reorder candidates when the instruction changes.
    instruction, responses = inputs(B=1, K=6)
    other = instruction + 3.0 * torch.randn(1, H, generator=torch.Generator().manual_seed(9))
    torch.manual_seed(0)
    linear = build_ranker(tiny("point", label_type="real", relevance="linear")).eval()
    shift = linear(other, responses) - linear(instruction, responses)
    torch.testing.assert_close(shift, shift[:, :1].expand_as(shift))
    torch.manual_seed(0)
    interaction = build_ranker(tiny("point", label_type="real", relevance="interaction")).eval()
    shift = interaction(other, responses) - interaction(instruction, responses)
    assert shift.std() > 1e-3


def test_cosine_scores_are_bounded_by_the_scale():
    torch.manual_seed(0)
    model = build_ranker(tiny("point")).eval()
    instruction, responses = inputs(B=4, K=16)
    scores = model(instruction, responses)
    # initial scale 10, bias 0: |s| = 10 |cos| <= 10
    assert scores.abs().max() <= 10.0 + 1e-4
    assert scores.abs().max() > 1.0  # and the scale really is applied


def test_input_norm_standardize():
    norm = InputNorm(H, "standardize")
    x = 5.0 + 3.0 * torch.randn(200, H)
    assert norm.needs_fit
    torch.testing.assert_close(norm(x, "response"), x)  # identity until fitted
    norm.fit(x[:50] * 2, x)
    assert not norm.needs_fit
    z = norm(x, "response")
    torch.testing.assert_close(z.mean(0), torch.zeros(H), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(H), atol=1e-4, rtol=0)
    # instructions use their own statistics
    torch.testing.assert_close(norm(x[:50] * 2, "instruction").mean(0), torch.zeros(H), atol=1e-4, rtol=0)
    # a constant dim must not divide by zero
    x[:, 0] = 1000.0
    norm.fit(x, x)
    assert torch.isfinite(norm(x, "response")).all()


def test_low_precision_features_are_accepted():
    torch.manual_seed(0)
    model = build_ranker(tiny("list"))
    instruction, responses = inputs()
    scores = model(instruction.bfloat16(), responses.bfloat16())
    assert scores.dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"kind": "pair"}, "kind"),
        ({"relevance": "dot"}, "relevance"),
        ({"label_type": "graded"}, "label_type"),
        ({"projection_dim": 10, "num_heads": 4}, "divisible"),
        ({"dropout": 1.0}, "dropout"),
        ({"input_norm": "batchnorm"}, "input_norm"),
        ({"hidden_size": 0}, "hidden_size"),
    ],
)
def test_bad_config_is_refused(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        RankerConfig(**{"hidden_size": H, **kwargs})


def test_bad_input_shapes_are_refused():
    model = build_ranker(tiny("list"))
    instruction, responses = inputs()
    with pytest.raises(ValueError, match="hidden size 16"):
        model(instruction[:, :16], responses[..., :16])
    with pytest.raises(ValueError, match="mask"):
        model(instruction, responses, torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="instruction"):
        model(instruction[:2], responses)


def test_config_dict_round_trip():
    config = tiny("point", use_instruction=False, label_type="real")
    assert RankerConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown"):
        RankerConfig.from_dict({**config.to_dict(), "colour": "red"})
