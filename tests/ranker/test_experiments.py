"""The experiment runners on a small synthetic store: shapes of the results and the effects they must show."""

import pandas as pd
import pytest
import torch

from ranker import experiments
from ranker.store import FeatureStore

from tests.ranker.test_cli import synthetic_store


def two_layer_store(num_problems: int, skip: int) -> FeatureStore:
    """Layer 2 carries the signal; layer 4 is pure noise. Two families, alternating."""
    store = synthetic_store(num_problems, seed=0, skip=skip)
    noise = torch.randn(store.responses.shape, generator=torch.Generator().manual_seed(skip))
    store.responses = torch.cat([store.responses, noise], dim=2)
    store.instruction = torch.cat([store.instruction, torch.randn(store.instruction.shape)], dim=1)
    store.layers = (2, 4)
    families = ["alpha" if i % 2 else "beta" for i in range(num_problems)]
    store.problems = [type(p)(p.prompt, p.answer, p.checker, p.tests, family) for p, family in zip(store.problems, families)]
    store.candidates["family"] = [families[i] for i in store.candidates["problem_index"]]
    return store


@pytest.fixture(scope="module")
def stores():
    return two_layer_store(160, skip=0), two_layer_store(80, skip=160)


def test_layer_ablation_finds_the_informative_layer(stores):
    rows = pd.DataFrame(experiments.layer_ablation(*stores, seeds=[0]))
    by_layer = rows.set_index("layer").accuracy
    assert list(rows.fraction) == [0.5, 1.0]
    assert by_layer[2] > by_layer[4] + 0.15


def test_scaling_law_rows_and_monotone_oracle(stores):
    rows = pd.DataFrame(experiments.scaling_law(*stores, layer=2, seeds=[0], ns=(1, 2, 4, 8, 16)))
    assert sorted(rows.n.unique()) == [1, 2, 4, 8]  # 16 > the store's 8 candidates: skipped
    oracle = rows[rows.method == "oracle"].set_index("n").accuracy
    assert list(oracle) == sorted(oracle)
    ranker = rows[rows.method == "list_ranker"].set_index("n").accuracy
    assert ranker[8] > ranker[1] + 0.1


def test_main_table_transfer_blocks_and_timing(stores):
    train, test = stores
    main = pd.DataFrame(experiments.main_table(train, test, layer=2, seeds=[0]))
    assert set(main.family) == {"alpha", "beta", "all"}
    overall = main[main.family == "all"].set_index("method").accuracy
    assert overall["list_ranker"] > overall["first"] + 0.15
    matrix = pd.DataFrame(experiments.transfer(train, test, layer=2, seeds=[0]))
    assert len(matrix) == 4 and set(matrix.train_family) == {"alpha", "beta"}
    blocks = pd.DataFrame(experiments.block_ablation(train, test, layer=2, seeds=[0], blocks=(1, 2)))
    assert blocks.parameters.iloc[1] > blocks.parameters.iloc[0]
    timing = pd.DataFrame(experiments.training_time(train, layer=2, repeats=1))
    assert set(timing.kind) == {"list", "point"} and (timing.seconds > 0).all()


def test_report_tables_come_from_the_results(stores, tmp_path):
    from ranker.report import report

    train, test = stores
    pd.DataFrame(experiments.main_table(train, test, layer=2, seeds=[0, 1])).to_csv(tmp_path / "main.csv", index=False)
    pd.DataFrame(experiments.training_time(train, layer=2, repeats=1)).to_csv(tmp_path / "timing.csv", index=False)
    text = report(tmp_path)
    main = pd.read_csv(tmp_path / "main.csv")
    first_all = main[(main.method == "first") & (main.family == "all")].accuracy.mean()
    assert f"| first sample | " in text and f"{100 * first_all:.1f} ± " in text
    assert "| ListRanker | " in text and "all (mean ± std, 2 seeds)" in text
    assert "CPU training time" in text


def test_family_table_pools_splits(stores, tmp_path):
    from ranker.report import family_table

    train, test = stores
    rows = pd.DataFrame(experiments.family_table(train, test))
    assert set(rows.split) == {"train", "test"} and set(rows.family) == {"alpha", "beta"}
    labels = torch.cat([train.labels(), test.labels()])
    families = train.families + test.families
    alpha = labels[[i for i, f in enumerate(families) if f == "alpha"]]
    split_oracle = [store.labels()[[i for i, f in enumerate(store.families) if f == "alpha"]].max(dim=1).values.mean()
                    for store in (train, test)]
    text = family_table(rows)
    # per-sample pooled over both splits; oracle@N per split (the splits may have different N)
    assert (f"| alpha | {len(alpha)} | {100 * alpha.mean():.1f} | {100 * split_oracle[0]:.1f} | "
            f"{100 * split_oracle[1]:.1f} |") in text


def test_rm_table_renders_the_bench_csv():
    from ranker.report import rm_table

    bench = pd.DataFrame([
        {"method": "ListRanker", "trainable_params": 87106, "loaded_params": 87106, "train_seconds": 0.81,
         "score_seconds_per_prompt": 0.00031, "peak_rss_mb": 520.0, "rss_increase_mb": 30.0, "accuracy": 0.5, "n": 16},
        {"method": "RM (base)", "trainable_params": 1843777, "loaded_params": 136358785, "train_seconds": 1276.0,
         "score_seconds_per_prompt": 1.5, "peak_rss_mb": 3400.0, "rss_increase_mb": 2900.0, "accuracy": 0.353, "n": 16},
        {"method": "oracle", "trainable_params": 0, "loaded_params": 0, "train_seconds": 0.0,
         "score_seconds_per_prompt": 0.0, "peak_rss_mb": float("nan"), "rss_increase_mb": float("nan"), "accuracy": 0.8, "n": 16},
    ])
    text = rm_table(bench)
    assert "| ListRanker | 87,106 / 87,106 | 810 ms | 0.31 ms | 520 MB (30 MB) | 50.0 |" in text
    assert "| RM (base) | 1,843,777 / 136,358,785 | 1276.0 s | 1.50 s | 3400 MB (2900 MB) | 35.3 |" in text
    assert "| oracle | – | – | – | – | 80.0 |" in text
