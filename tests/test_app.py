"""The app, launched on the embedded model and driven through gradio_client: the whole flow."""

import time

import gradio as gr
import pytest
from gradio_client import Client

pytestmark = pytest.mark.integration

PROMPT = "What is 7 + 5? Answer with just the number."


@pytest.fixture(scope="module")
def client(app_server):
    return Client(app_server[1], verbose=False)


@pytest.fixture(scope="module")
def generated(client):
    request_id, rows, table_html, timing = client.predict(PROMPT, 4, 1.0, 1.0, 24, 3, "latest retrained", api_name="/generate")
    return request_id, rows, table_html, timing


def test_generate_returns_a_request_id_and_ranked_candidates(generated, app_server):
    request_id, rows, table_html, timing = generated
    assert len(request_id) == 32 and int(request_id, 16) >= 0
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    assert sorted(r["candidate"] for r in rows) == [0, 1, 2, 3]
    scores = [r["ranker_score"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= r["p_correct"] <= 1.0 for r in rows)
    assert sorted(r["rm_rank"] for r in rows) == [1, 2, 3, 4]  # the shipped RM (base) scored every candidate
    assert all(r["finish"] in ("eos", "length") and 1 <= r["tokens"] <= 24 and r["mean_logprob"] < 0 for r in rows)
    assert "ranker's pick" in table_html and table_html.count("<tr") == 5
    assert "4 candidates" in timing and "layer 18" in timing and "ranker" in timing and "RM" in timing


def test_scores_are_the_shipped_rankers_own(generated, app_server):
    """The JSON's scores are what the shipped ranker gives the stored (captured) features."""
    app, _ = app_server
    request_id, rows, _, _ = generated
    stored = app.SERVER.labels.get_request(request_id)
    ranker = app.SERVER.shipped["shipped ListRanker"]
    import torch

    from ranker.tasks.voting import response_keys

    expected = ranker.score(stored["instruction"], stored["responses"], torch.tensor(stored["mean_logprobs"]),
                            response_keys(stored["candidates"]))
    for row in rows:
        # stored features are float16, the live ones float32: equal to float16 rounding
        assert row["ranker_score"] == pytest.approx(float(expected[row["candidate"]]), rel=5e-3, abs=5e-3)


def test_label_is_stored_with_everything_needed_to_retrain(client, generated, app_server):
    app, _ = app_server
    request_id, rows, _, _ = generated
    before = app.SERVER.labels.count()
    label_id = client.predict(request_id, str(rows[1]["candidate"]), "tester", api_name="/label")
    assert len(label_id) == 32
    assert app.SERVER.labels.count() == before + 1 and app.SERVER.labels.count(annotator="tester") == 1
    frame = app.SERVER.labels.labels_frame()
    row = frame[frame.label_id == label_id].iloc[0]
    assert row.choice == str(rows[1]["candidate"]) and row.annotator == "tester"
    stored = app.SERVER.labels.get_request(request_id)
    assert tuple(stored["responses"].shape) == (4, 576) and tuple(stored["instruction"].shape) == (576,)
    assert stored["prompt"] == PROMPT and len(stored["rm_scores"]) == 4


def test_retrain_promotes_or_refuses_with_a_reason(client, generated, app_server):
    app, _ = app_server
    request_id, rows, _, _ = generated
    client.predict(request_id, str(rows[0]["candidate"]), "tester", api_name="/label")
    message = client.predict(api_name="/retrain")
    assert "started" in message
    deadline = time.time() + 120
    status = client.predict(api_name="/retrain_status")
    while status["state"] == "running" and time.time() < deadline:
        time.sleep(0.5)
        status = client.predict(api_name="/retrain_status")
    assert status["state"] == "idle", status.get("last_error")
    result = status["last_result"]
    assert result["version"] is not None and result["reason"]
    entry = [h for h in status["history"] if h["version"] == result["version"]][0]
    assert entry["status"] == ("promoted" if result["promoted"] else "refused")
    assert "store_accuracy" in result["reason"] or "no current" in result["reason"].lower()


def test_plot_endpoint_returns_five_figures(client):
    figures = client.predict(api_name="/plots")
    assert len(figures) == 5
    assert all(isinstance(f, dict) and f.get("type") == "plotly" for f in figures)


def test_blind_generate_hides_scores(client):
    request_id, rows, table_html, _ = client.predict(PROMPT, 3, 1.0, 1.0, 16, 4, "latest retrained", api_name="/generate_blind")
    assert [r["position"] for r in rows] == [1, 2, 3] and all("ranker_score" not in r for r in rows)
    assert "Blind mode" in table_html and "ranker score" not in table_html


@pytest.mark.parametrize(
    "args, message",
    [
        (("   ", 4, 1.0, 1.0, 24, -1), "Type a prompt"),
        (("hi", 65, 1.0, 1.0, 24, -1), "between 1 and 64"),
        (("hi", 4, 1.0, 0.0, 24, -1), "top_p"),
    ],
)
def test_bad_generate_input_gets_a_clear_error(app_server, args, message):
    app, _ = app_server
    with pytest.raises(gr.Error, match=message):
        app.generate(*args)


def test_bad_labels_are_refused_and_nothing_is_lost(app_server, generated):
    app, _ = app_server
    request_id = generated[0]
    before = app.SERVER.labels.count(include_skips=True)
    with pytest.raises(gr.Error, match="unknown|not found|no request"):
        app.label("f" * 32, "0", "tester")
    with pytest.raises(gr.Error, match="choice|candidate"):
        app.label(request_id, "99", "tester")
    with pytest.raises(gr.Error, match="Generate"):
        app.pick_position(1, "", "tester")
    assert app.SERVER.labels.count(include_skips=True) == before


def test_undo_removes_the_last_label_of_that_annotator(app_server, generated):
    app, _ = app_server
    request_id = generated[0]
    app.label(request_id, "skip", "undoer")
    app.label(request_id, "0", "undoer")
    assert app.SERVER.labels.count(annotator="undoer") == 1
    status, count = app.undo("undoer")
    assert "Undid" in status and app.SERVER.labels.count(annotator="undoer") == 0


def test_a_model_with_no_shipped_ranker_is_told_why_and_offered_a_bootstrap(tiny_base, tmp_path):
    import app

    server = app.Server(tmp_path)
    server.attach(tiny_base)
    assert server.shipped == {} and server.rm is None
    assert "trained on" in server.unranked_reason()  # the fingerprint mismatch, spelled out
    assert server.ranker("latest retrained") is None


def test_profiles_keep_their_own_labels_and_ranker_line(client, app_server):
    app, _ = app_server
    request_id, rows, _, _ = client.predict(PROMPT, 2, 1.0, 1.0, 8, 1, "latest retrained", "alice", api_name="/generate")
    client.predict(request_id, str(rows[0]["candidate"]), "alice", api_name="/label")
    status = client.predict("alice", api_name="/retrain_status")
    assert status["profile"] == "alice" and status["label_count"] == 1
    assert client.predict("default", api_name="/retrain_status")["profile"] == "default"
    with pytest.raises(gr.Error, match="profile"):
        app.generate(PROMPT, 2, 1.0, 1.0, 8, 1, "latest retrained", "../etc")
    # A profile with no version of its own ranks with the default line's ranker.
    assert app.SERVER.ranker("profile:alice") is not None
    with pytest.raises(ValueError, match="unknown ranker"):
        app.SERVER.ranker("no-such-ranker")
