"""Seeded ids for the label store's tests.

The retrain job splits labels into training and validation by a hash of their request id, and
the store draws ids with uuid4. Seeding the ids makes each test's split, and so its numbers,
the same on every run.
"""

import os
import random
import uuid

import pytest


@pytest.fixture(autouse=True)
def seeded_uuids(monkeypatch):
    import labeling.label_store

    rng = random.Random(int(os.environ.get("LABEL_ID_SEED", 0)))  # vary it to check a test is not tuned to one split
    fake = type("SeededUUID", (), {"uuid4": staticmethod(lambda: uuid.UUID(int=rng.getrandbits(128), version=4)),
                                   "UUID": uuid.UUID})
    monkeypatch.setattr(labeling.label_store, "uuid", fake)
