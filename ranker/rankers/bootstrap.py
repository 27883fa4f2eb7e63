"""Bootstrap a ranker for a base model that has none: sample the task suite, train, return it.

Used by the app when the loaded model's fingerprint matches no shipped ranker (e.g. a hub model
named in LANGUAGE_RANKER_MODEL). Small by default, so it finishes in minutes on a CPU:
5 families x 16 prompts x N=8 candidates.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

from ranker.capture.base_model import BaseModel
from ranker.capture.sampling import SamplingConfig
from ranker.capture.store_builder import Progress, build_store
from ranker.rankers.estimator import LanguageRanker
from ranker.rankers.store_training import train_on_store
from ranker.tasks.split import split

BOOTSTRAP_FAMILIES = ("arithmetic", "word_problem", "code", "comparison", "table_lookup")


@dataclass
class BootstrapConfig:
    """How much of the task suite to sample for a bootstrap ranker."""

    families: tuple[str, ...] = BOOTSTRAP_FAMILIES  # task families to sample
    prompts_per_family: int = 16  # training prompts per family
    num_candidates: int = 8  # N sampled per prompt
    max_new_tokens: int = 48
    layer: float | int = 0.6  # depth fraction or hidden_states index
    kind: str = "list"  # "list" or "point"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.prompts_per_family < 2:
            raise ValueError(f"prompts_per_family must be at least 2, got {self.prompts_per_family}")
        if self.num_candidates < 2:
            raise ValueError(f"num_candidates must be at least 2 to rank, got {self.num_candidates}")
        if self.kind not in ("list", "point"):
            raise ValueError(f"kind must be 'list' or 'point', got {self.kind!r}")


def bootstrap_ranker(base: BaseModel, config: BootstrapConfig | None = None, progress: Progress | None = None,
                     lane: contextlib.AbstractContextManager | None = None) -> LanguageRanker:
    """Sample the suite with `base`, label with the checkers, and train a ranker on its features.

    lane: held around each sampling call (see `ranker.capture.store_builder.build_store`); training runs outside it.
    """
    config = config or BootstrapConfig()
    problems = [p for family in config.families for p in split(family, config.prompts_per_family, 0, seed=config.seed).train]
    sampling = SamplingConfig(num_candidates=config.num_candidates, max_new_tokens=config.max_new_tokens, seed=config.seed)
    store = build_store(base, problems, sampling, config.layer, prompts_per_call=max(1, 128 // config.num_candidates),
                        progress=progress, lane=lane)
    return train_on_store(store, store.layers[0], kind=config.kind, seed=config.seed,
                          training_data={"bootstrap": asdict(config)})
