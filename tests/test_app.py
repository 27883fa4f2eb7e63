"""The app, launched on the embedded model and driven through gradio_client: the whole flow."""

import re
import time

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

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
    assert re.fullmatch("[0-9a-f]{32}", request_id) and app_server[2].labels.get_request(request_id)["prompt"] == PROMPT
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    assert sorted(r["candidate"] for r in rows) == [0, 1, 2, 3]
    scores = [r["ranker_score"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= r["p_correct"] <= 1.0 for r in rows)
    assert sorted(r["rm_rank"] for r in rows) == [1, 2, 3, 4]  # the shipped RM (base) scored every candidate
    assert all(r["finish"] in ("eos", "length") and 1 <= r["tokens"] <= 24 and r["mean_logprob"] < 0 for r in rows)
    assert "ranker's pick" in table_html and table_html.count("<tr") == 5
    assert "4 candidates" in timing and "layer 18" in timing and "ranker" in timing and "RM" in timing


def test_the_ranked_list_comes_before_the_reward_models_column(client, app_server):
    """/generate yields twice: ranked at once, then the same rows with the RM's scores (also stored)."""
    outputs = list(client.submit(PROMPT, 3, 1.0, 1.0, 12, 6, "latest retrained", api_name="/generate"))
    assert len(outputs) == 2
    (request_id, ranked, _, timing), (same_id, final, final_html, final_timing) = outputs
    assert request_id == same_id
    assert [r["rank"] for r in ranked] == [1, 2, 3] and all(r["rm_score"] is None for r in ranked)
    assert "RM scoring" in timing
    assert [r["candidate"] for r in final] == [r["candidate"] for r in ranked]  # the order shown does not move
    assert sorted(r["rm_rank"] for r in final) == [1, 2, 3] and re.search(r"RM \d+ ms", final_timing)
    stored = app_server[2].labels.get_request(request_id)["rm_scores"]
    assert stored == pytest.approx([r["rm_score"] for r in sorted(final, key=lambda r: r["candidate"])], abs=1e-4)  # rows round to 4 places


def test_scores_are_the_shipped_rankers_own(generated, app_server):
    """The JSON's scores are what the shipped ranker gives the stored (captured) features."""
    service = app_server[2]
    request_id, rows, _, _ = generated
    stored = service.labels.get_request(request_id)
    ranker = service.shipped["shipped ListRanker"]
    import torch

    from ranker.tasks.voting import response_keys

    expected = ranker.score(stored["instruction"], stored["responses"], torch.tensor(stored["mean_logprobs"]),
                            response_keys(stored["candidates"]))
    for row in rows:
        # stored features are float16, the live ones float32: equal to float16 rounding
        assert row["ranker_score"] == pytest.approx(float(expected[row["candidate"]]), rel=5e-3, abs=5e-3)


def test_label_is_stored_with_everything_needed_to_retrain(client, generated, app_server):
    service = app_server[2]
    request_id, rows, _, _ = generated
    before = service.labels.count()
    label_id = client.predict(request_id, str(rows[1]["candidate"]), "tester", api_name="/label")
    assert re.fullmatch("[0-9a-f]{32}", label_id)
    assert service.labels.count() == before + 1 and service.labels.count(annotator="local:tester") == 1
    frame = service.labels.labels_frame()
    row = frame[frame.label_id == label_id].iloc[0]
    assert row.choice == str(rows[1]["candidate"]) and row.annotator == "local:tester"
    assert row.order_shown == [r["candidate"] for r in rows]  # the order /generate returned
    stored = service.labels.get_request(request_id)
    assert tuple(stored["responses"].shape) == (4, 576) and tuple(stored["instruction"].shape) == (576,)
    assert stored["prompt"] == PROMPT and len(stored["rm_scores"]) == 4


def test_retrain_decides_by_the_rule_and_says_why(client, generated, app_server):
    """The decision and its reason are what the promotion rule gives for the two rankers' own metrics."""
    from labeling.retrain import promotion_decision, validation_metrics

    service = app_server[2]
    request_id, rows, _, _ = generated
    client.predict(request_id, str(rows[0]["candidate"]), "tester", api_name="/label")
    live_before = service.ranker("latest retrained")
    message = client.predict("default", "", api_name="/retrain")  # local mode: a loopback caller is an admin
    assert message == "Retraining queued; it runs in the background."
    deadline = time.time() + 120
    status = client.predict("default", api_name="/retrain_status")
    while status["state"] in ("queued", "running") and time.time() < deadline:
        time.sleep(0.5)
        status = client.predict("default", api_name="/retrain_status")
    assert status["state"] == "idle", status.get("last_error")
    result = status["last_result"]
    job = service.jobs["default"]
    new = service.registry.load(result["version"])
    expected_new = validation_metrics(new, job.val_store, [])
    expected_current = validation_metrics(live_before, job.val_store, [])
    assert result["metrics"] == pytest.approx(expected_new) and result["current_metrics"] == pytest.approx(expected_current)
    promoted, reason = promotion_decision(expected_new, expected_current, job.config.tolerance)
    assert (result["promoted"], result["reason"]) == (promoted, reason)
    entry = [h for h in status["history"] if h["version"] == result["version"]][0]
    assert entry["status"] == ("promoted" if promoted else "refused")
    assert (service.ranker("latest retrained") is live_before) is (not promoted)  # swapped in memory only on promotion


def test_plot_endpoint_returns_the_results_figures_and_the_learning_curve(client):
    import json

    figures = [json.loads(f["plot"]) for f in client.predict(api_name="/plots")]
    titles = [f["layout"]["title"]["text"] for f in figures]
    assert titles[:6] == ["Scaling law: best-of-N accuracy vs N", "Layer ablation: which hidden layer to read",
                          "Transformer blocks in the ListRanker",
                          "Cross-task transfer (rows: trained on; columns: evaluated on)",
                          "Leave one family out: accuracy on a family never trained on",
                          "Reliability of P(correct) on prompts no ranker trained on"]
    scaling = {trace["name"] for trace in figures[0]["data"]}
    assert {"ListRanker", "PointRanker", "oracle (any correct)"} <= scaling  # from assets/results/scaling.csv
    reliability = {trace["name"].split(" (ECE")[0] for trace in figures[5]["data"]}  # from assets/results/calibration.csv
    assert {"perfect", "ListRanker, held-out prompts", "ListRanker, left-out families"} <= reliability
    assert all(figures[k]["data"] for k in range(6)) and len(figures) == 7


def test_blind_generate_hides_scores(client):
    request_id, rows, table_html, _ = client.predict(PROMPT, 3, 1.0, 1.0, 16, 4, "latest retrained", api_name="/generate_blind")
    assert [r["position"] for r in rows] == [1, 2, 3] and all("ranker_score" not in r for r in rows)
    assert "Blind mode" in table_html and "ranker score" not in table_html


@pytest.mark.parametrize(
    "args, message",
    [
        (("   ", 4, 1.0, 1.0, 24, -1), "the prompt is empty"),
        # the sliders' own bounds answer first; the service checks the same bounds behind them
        (("hi", 65, 1.0, 1.0, 24, -1), "Value 65 is greater than maximum value 64"),
        (("hi", 4, 1.0, 0.0, 24, -1), "Value 0.0 is less than minimum value 0.05"),
        (("hi", 4, 1.0, 1.0, 24, 2**40), "seed must be -1 .random. or between 0 and 2147483647"),
        (("x" * 1_000_000, 4, 1.0, 1.0, 24, -1), "1,000,000 characters long; the limit is 8,000"),
        (("bell \x07", 4, 1.0, 1.0, 24, -1), "control character U\\+0007"),
        (("hi", 4, 1.0, 1.0, 24, -1, "../../etc/passwd"), "unknown ranker"),
        (("hi", 4, 1.0, 1.0, 24, -1, "latest retrained", "../etc"), "profile must be 1-64 letters"),
    ],
)
def test_bad_generate_input_gets_a_clear_error_through_the_api(client, app_server, args, message):
    service = app_server[2]
    before = (service.lane.uses, service.labels.revision())
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name="/generate")
    assert (service.lane.uses, service.labels.revision()) == before  # refused before any model work


def call_raw(url: str, api_name: str, data: list) -> tuple[str, str]:
    """POST `data` as plain JSON (ASCII-escaped, as any HTTP client may send it) to the REST API: (event, payload)."""
    import json

    import httpx

    body = json.dumps({"data": data})  # a lone surrogate travels as the escape "\\udcff"
    with httpx.Client(base_url=url, timeout=60) as http:
        posted = http.post(f"/gradio_api/call/{api_name}", content=body, headers={"content-type": "application/json"})
        posted.raise_for_status()
        stream = http.get(f"/gradio_api/call/{api_name}/{posted.json()['event_id']}").text
    events = [line.removeprefix("event: ") for line in stream.splitlines() if line.startswith("event: ")]
    payloads = [line.removeprefix("data: ") for line in stream.splitlines() if line.startswith("data: ")]
    return events[-1], payloads[-1]


def test_a_lone_surrogate_over_plain_http_gets_a_message_for_a_person(app_server):
    _, url, service = app_server
    before = (service.lane.uses, service.labels.revision())
    event, payload = call_raw(url, "generate", ["a lone \udcff surrogate", 2, 1.0, 1.0, 4, -1, "latest retrained", "default"])
    assert event == "error" and "the prompt is not valid Unicode: a lone surrogate U+DCFF at character 7" in payload
    assert (service.lane.uses, service.labels.revision()) == before


def test_bad_labels_are_refused_and_nothing_is_lost(client, app_server, generated):
    service = app_server[2]
    request_id = generated[0]
    before = service.labels.revision()
    for args, message in (((("f" * 32), "0", "tester"), "unknown request_id"),
                          ((request_id, "99", "tester"), "choice must be a candidate index"),
                          (("../x", "0", "tester"), "request id must be the 32 hex characters"),
                          ((request_id, "0", "../tester"), "annotator must be 1-64 letters")):
        with pytest.raises(AppError, match=message):
            client.predict(*args, api_name="/label")
    assert service.labels.revision() == before


def test_a_retried_label_returns_the_same_id_and_stores_one_row(client, app_server, generated):
    service = app_server[2]
    request_id = generated[0]
    first = client.predict(request_id, "2", "retrier", "key-0001", api_name="/label")
    again = client.predict(request_id, "2", "retrier", "key-0001", api_name="/label")
    frame = service.labels.labels_frame()
    assert first == again and (frame.annotator == "local:retrier").sum() == 1


def test_undo_removes_the_last_label_of_that_annotator(client, app_server, generated):
    service = app_server[2]
    request_id = generated[0]
    client.predict(request_id, "skip", "undoer", api_name="/label")
    label_id = client.predict(request_id, "0", "undoer", api_name="/label")
    assert service.labels.count(annotator="local:undoer") == 1
    assert client.predict("undoer", api_name="/undo") == label_id
    assert service.labels.count(annotator="local:undoer") == 0


def test_a_model_with_no_shipped_ranker_is_told_why_and_offered_a_bootstrap(app_service, tiny_base, tmp_path):
    from dataclasses import replace

    from labeling.service import RankerService

    service = RankerService(replace(app_service.config, data_dir=tmp_path)).start(tiny_base)
    assert service.shipped == {} and service.rm is None
    assert "trained on" in service.unranked_reason()  # the fingerprint mismatch, spelled out
    assert service.ranker("latest retrained") is None


def test_profiles_keep_their_own_labels_and_ranker_line(client, app_server):
    service = app_server[2]
    request_id, rows, _, _ = client.predict(PROMPT, 2, 1.0, 1.0, 8, 1, "latest retrained", "alice", api_name="/generate")
    client.predict(request_id, str(rows[0]["candidate"]), "alice", api_name="/label")
    status = client.predict("alice", api_name="/retrain_status")
    assert status["profile"] == "alice" and status["label_count"] == 1
    assert client.predict("default", api_name="/retrain_status")["profile"] == "default"
    # A profile with no version of its own ranks with the default line's ranker.
    assert service.ranker("profile:alice") is service.ranker("latest retrained")
    with pytest.raises(ValueError, match="unknown ranker"):
        service.ranker("no-such-ranker")
