"""The app, launched and driven through gradio_client on the embedded model."""

import gradio as gr
import pytest
from gradio_client import Client

import app

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(embedded_base):
    app.set_base_model(embedded_base)
    app.demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True)
    try:
        yield Client(app.demo.local_url, verbose=False)
    finally:
        app.demo.close()


def test_generate_returns_n_candidates_ranked_by_the_shipped_ranker(client):
    table, status = client.predict(
        "What is 7 + 5? Answer with just the number.", 4, 1.0, 1.0, 24, 3, api_name="/generate"
    )
    assert table["headers"] == app.CANDIDATE_COLUMNS
    rows = table["data"]
    assert [row[0] for row in rows] == [1, 2, 3, 4]
    assert sorted(row[1] for row in rows) == [1, 2, 3, 4]
    scores = [row[3] for row in rows]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= row[4] <= 1.0 for row in rows)
    assert all(row[5] in ("eos", "length") and 1 <= row[6] <= 24 for row in rows)
    assert "4 candidates" in status and "layer 18" in status and "shipped ListRanker" in status


def test_scores_are_the_rankers_own(embedded_base):
    """The table's scores are what the shipped ranker gives the captured features."""
    from ranker.estimator import LanguageRanker
    from ranker.sampling import SamplingConfig, sample_candidates

    table, _ = app.generate("Which is larger, 47 or 74? Answer with just the number.", 3, 1.0, 1.0, 16, 5)
    result = sample_candidates(embedded_base, "Which is larger, 47 or 74? Answer with just the number.",
                               SamplingConfig(num_candidates=3, max_new_tokens=16, seed=5), layers=18)
    expected = LanguageRanker.load(app.DEFAULT_RANKER).score(*result.features())
    by_index = {row["#"]: row["ranker score"] for _, row in table.iterrows()}
    assert [by_index[k + 1] for k in range(3)] == [round(v, 3) for v in expected.tolist()]


def test_a_ranker_for_another_model_is_refused_with_the_reason(tiny_base):
    app.load_default_ranker(tiny_base)
    try:
        assert app._ranker is None and "does not match" in app._ranker_note
    finally:
        app.load_default_ranker(app.get_base_model())


def test_same_seed_same_candidates_through_the_api(client):
    args = ("Name a colour.", 3, 1.0, 1.0, 12, 11)
    first, _ = client.predict(*args, api_name="/generate")
    second, _ = client.predict(*args, api_name="/generate")
    assert [row[1] for row in first["data"]] == [row[1] for row in second["data"]]


@pytest.mark.parametrize(
    "args, message",
    [
        (("   ", 4, 1.0, 1.0, 24, -1), "Type a prompt"),
        (("hi", 65, 1.0, 1.0, 24, -1), "at most 64"),
        (("hi", 4, 1.0, 0.0, 24, -1), "top_p"),
    ],
)
def test_bad_input_gets_a_clear_error(args, message):
    with pytest.raises(gr.Error, match=message):
        app.generate(*args)
