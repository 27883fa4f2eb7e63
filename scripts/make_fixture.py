"""Cut the frozen feature fixture for the regression test from a built suite.

    .venv/bin/python scripts/make_fixture.py data/suite tests/assets/frozen_suite

Keeps one layer (0.6 of depth) and every k-th problem of each family, so the fixture stays
a few MB while holding real SmolLM2-135M-Instruct features, candidates and labels.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ranker.capture.feature_store import FeatureStore  # noqa: E402
from ranker.capture.hidden_states import resolve_layer  # noqa: E402


def main(source: str, target: str, train_per_family: int = 30, test_per_family: int = 20) -> None:
    for split, per_family in (("train", train_per_family), ("test", test_per_family)):
        store = FeatureStore.load(Path(source) / split)
        layer = resolve_layer(0.6, store.model.num_layers)
        picked = []
        for family in sorted(set(store.families)):
            picked += [i for i, f in enumerate(store.families) if f == family][:per_family]
        small = store.subset(picked).select_layers([layer])
        small.save(Path(target) / split)
        print(f"{split}: {len(picked)} problems at layer {layer} -> {Path(target) / split}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
