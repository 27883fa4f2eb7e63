"""32 concurrent gradio_client clients x 20 labels against the launched app: every label stored once."""

import threading
import uuid

import pytest
from gradio_client import Client

pytestmark = pytest.mark.integration

CLIENTS, LABELS_EACH = 32, 20


def test_32_clients_x_20_labels_are_all_stored_exactly_once(app_server):
    _, url, service = app_server
    setup = service.identify(annotator="load-setup")
    requests = [service.generate(setup, f"Name a colour ({k}).", n=2, max_new_tokens=2, seed=k).request_id
                for k in range(LABELS_EACH)]
    before = set(service.labels.labels_frame().label_id)
    results, errors = {}, []

    def annotate(worker: int) -> None:
        try:
            client = Client(url, verbose=False)
            for k, request_id in enumerate(requests):
                key = uuid.uuid4().hex
                label_id = client.predict(request_id, str(k % 2), f"load-{worker}", key, api_name="/label")
                if k % 5 == 0:  # a client that retries after a timeout sends the same key again
                    assert client.predict(request_id, str(k % 2), f"load-{worker}", key, api_name="/label") == label_id
                results[(worker, k)] = label_id
        except Exception as error:  # reported below; a thread must not die silently
            errors.append(f"client {worker}: {type(error).__name__}: {error}")

    threads = [threading.Thread(target=annotate, args=(w,)) for w in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    assert errors == []
    frame = service.labels.labels_frame()
    new = frame[~frame.label_id.isin(before)]
    assert len(results) == CLIENTS * LABELS_EACH == len(set(results.values())) == 640
    assert len(new) == 640 and set(new.label_id) == set(results.values())  # exactly 640 rows, no duplicates
    assert not new.undone.any() and new.groupby("annotator").size().eq(LABELS_EACH).all()
