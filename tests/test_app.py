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


def test_generate_returns_n_candidates(client):
    table, status = client.predict(
        "What is 7 + 5? Answer with just the number.", 4, 1.0, 1.0, 24, 3, api_name="/generate"
    )
    assert table["headers"] == app.CANDIDATE_COLUMNS
    assert [row[0] for row in table["data"]] == [1, 2, 3, 4]
    assert all(row[2] in ("eos", "length") for row in table["data"])
    assert all(1 <= row[3] <= 24 for row in table["data"])
    assert "4 candidates" in status and "layer 18" in status


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
