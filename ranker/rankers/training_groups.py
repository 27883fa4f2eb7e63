"""Training data for rankers: queries -> groups (listwise) or single candidates (pointwise) -> padded batches.

A query is anything with the four attributes of `QueryLike` (e.g. `ranker.capture.hidden_states.QueryFeatures`):
    instruction (H,), responses (K, H), labels (K,) float, query_id str.
K may differ between queries.

Listwise data (paper, "Training data"): for each query draw `group_size` distinct candidates at
random, `groups_per_query` times. Groups whose labels are all equal are dropped when the loss needs
a contrast (KL and Bradley-Terry on binary labels): for 0/1 labels that is "keep only groups with
both a positive and a negative". A query with no more than `group_size` candidates gives one group
holding all of them (repeats would be the same set).

Pointwise data: every (instruction, candidate, label) triple once. It is stored as a group of size 1,
so both kinds of data go through the same padded batch and the same model call.

Two pools hold the candidates that groups index: `FeaturePool`, every feature stacked in memory,
and `StorePool`, a feature store's problems whose response features stay in the store and are read
batch by batch (streaming training of a store larger than memory). Both number their rows alike and
groups are drawn from their labels and offsets only, so the same generator draws the same groups
from either, and `collate` gives the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:  # only a type here: importing the store would load the base-model code for every ranker user
    from ranker.capture.feature_store import FeatureStore


@runtime_checkable
class QueryLike(Protocol):
    """What the data pipeline reads from a query; `ranker.capture.hidden_states.QueryFeatures` satisfies it."""

    instruction: Tensor  # (H,) features at the last prompt token
    responses: Tensor  # (K, H) features at the last token of each candidate
    labels: Tensor  # (K,) float: 1/0 correct/incorrect, or a real-valued grade
    query_id: str


@dataclass
class RankingQuery:
    """A minimal concrete `QueryLike` (used for preferences, synthetic data and tests)."""

    instruction: Tensor  # (H,)
    responses: Tensor  # (K, H)
    labels: Tensor  # (K,)
    query_id: str = ""
    mean_logprob: Tensor | None = None  # (K,) mean token log-prob per candidate, for score fusion (ranker.rankers.fusion)
    vote_keys: list | None = None  # K answer keys (ranker.tasks.voting, None = no answer), for score fusion


def queries_from_tensors(
    instructions: Tensor, responses: Tensor, labels: Tensor, query_ids: Sequence[str] | None = None,
    mean_logprobs: Tensor | None = None, vote_keys: Sequence[Sequence] | None = None,
) -> list[RankingQuery]:
    """Split stacked features into queries: instructions (P, H), responses (P, N, H), labels (P, N).

    mean_logprobs: optional (P, N) mean token log-probs, kept on each query for score fusion.
    vote_keys: optional P lists of N answer keys (None where a candidate has no answer), likewise.

    E.g. from a feature store: `queries_from_tensors(*store.features(layer), store.labels())`.
    The queries hold views of the given tensors (no copy).
    """
    P = instructions.shape[0]
    shapes_ok = instructions.dim() == 2 and responses.dim() == 3 and responses.shape[0] == P
    if not shapes_ok or responses.shape[2] != instructions.shape[1]:
        raise ValueError(
            "expected instructions (P, H) and responses (P, N, H), "
            f"got {tuple(instructions.shape)} and {tuple(responses.shape)}"
        )
    if tuple(labels.shape) != tuple(responses.shape[:2]):
        raise ValueError(f"labels must be (P, N) = {tuple(responses.shape[:2])}, got {tuple(labels.shape)}")
    if query_ids is not None and len(query_ids) != P:
        raise ValueError(f"{len(query_ids)} query_ids for {P} queries")
    if mean_logprobs is not None and tuple(mean_logprobs.shape) != tuple(responses.shape[:2]):
        raise ValueError(f"mean_logprobs must be (P, N) = {tuple(responses.shape[:2])}, got {tuple(mean_logprobs.shape)}")
    if vote_keys is not None and (len(vote_keys) != P or any(len(row) != responses.shape[1] for row in vote_keys)):
        raise ValueError(f"vote_keys must be {P} lists of {responses.shape[1]} keys")
    ids = [str(i) for i in query_ids] if query_ids is not None else [str(i) for i in range(P)]
    return [
        RankingQuery(instructions[p], responses[p], labels[p].float(), ids[p],
                     None if mean_logprobs is None else mean_logprobs[p].float(),
                     None if vote_keys is None else list(vote_keys[p]))
        for p in range(P)
    ]



def store_queries(store: FeatureStore, layer: int | None = None, index=None) -> list[RankingQuery]:
    """The store's problems as ranking queries at one layer (ids "family/index").

    index: optional (P, n) candidate indices per problem (e.g. `ranker.evaluation.selection.subsets`), to
    make queries of those n candidates only; default: all N. Each query carries its candidates'
    mean log-probs and answer keys (ranker.tasks.voting) for score fusion.
    """
    instruction, responses = store.features(layer)
    ids = [f"{p.family}/{i}" for i, p in enumerate(store.problems)]
    mean_logprobs = torch.tensor(store.column("mean_logprob"), dtype=torch.float32)
    labels, vote_keys = store.labels(), store.column("vote_key")
    if index is not None:
        index = torch.as_tensor(np.asarray(index), dtype=torch.long)
        if index.dim() != 2 or index.shape[0] != len(store.problems):
            raise ValueError(f"index must be (P, n) = ({len(store.problems)}, n), got {tuple(index.shape)}")
        rows = torch.arange(len(store.problems))[:, None]
        responses, labels, mean_logprobs = responses[rows, index], labels[rows, index], mean_logprobs[rows, index]
        vote_keys = [[keys[k] for k in picked] for keys, picked in zip(vote_keys, index.tolist())]
    return queries_from_tensors(instruction, responses, labels, ids, mean_logprobs, vote_keys)

@dataclass
class FeaturePool:
    """All queries' features stacked once, so that a batch is one indexing operation.

    Candidates of query q are rows offsets[q]:offsets[q+1] of `responses` and `labels`.
    """

    instructions: Tensor  # (Q, H)
    responses: Tensor  # (N, H), N = total candidates
    labels: Tensor  # (N,) float32
    offsets: Tensor  # (Q + 1,) long
    query_ids: list[str]

    @classmethod
    def from_queries(cls, queries: Sequence[QueryLike], dtype: torch.dtype = torch.float32) -> "FeaturePool":
        """Validate and stack `queries`. Raises ValueError naming the first bad query."""
        if len(queries) == 0:
            raise ValueError("need at least one query, got an empty sequence")
        hidden = queries[0].instruction.shape[-1]
        for n, q in enumerate(queries):
            name = f"query {n} ({getattr(q, 'query_id', '?')!r})"
            if q.instruction.dim() != 1 or q.instruction.shape[0] != hidden:
                raise ValueError(f"{name}: instruction must be ({hidden},), got {tuple(q.instruction.shape)}")
            if q.responses.dim() != 2 or q.responses.shape[1] != hidden or q.responses.shape[0] < 1:
                raise ValueError(f"{name}: responses must be (K>=1, {hidden}), got {tuple(q.responses.shape)}")
            if tuple(q.labels.shape) != (q.responses.shape[0],):
                raise ValueError(f"{name}: labels must be ({q.responses.shape[0]},), got {tuple(q.labels.shape)}")
        counts = torch.tensor([q.responses.shape[0] for q in queries])
        offsets = torch.zeros(len(queries) + 1, dtype=torch.long)
        offsets[1:] = counts.cumsum(0)
        return cls(
            instructions=torch.stack([q.instruction for q in queries]).to(dtype),
            responses=torch.cat([q.responses for q in queries]).to(dtype),
            labels=torch.cat([q.labels for q in queries]).to(torch.float32),
            offsets=offsets,
            query_ids=[str(q.query_id) for q in queries],
        )

    @property
    def num_queries(self) -> int:
        return self.instructions.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.instructions.shape[1]

    def to(self, device: str | torch.device) -> "FeaturePool":
        moved = (t.to(device) for t in (self.instructions, self.responses, self.labels))
        return FeaturePool(*moved, offsets=self.offsets, query_ids=self.query_ids)

    def norm_fit_features(self) -> tuple[Tensor, Tensor]:
        """(instructions (Q, H), responses (N, H)) that the ranker's input normalisation is fitted on: all of them."""
        return self.instructions, self.responses

    def summary(self) -> dict:
        """Counts that a checkpoint card records about its training data."""
        counts = self.offsets.diff()
        return {
            "num_queries": self.num_queries,
            "num_candidates": int(counts.sum()),
            "min_candidates": int(counts.min()),
            "max_candidates": int(counts.max()),
            "mean_label": float(self.labels.float().mean()),
            "hidden_size": self.hidden_size,
        }


@dataclass
class GroupIndex:
    """G groups as indices into a `FeaturePool`, padded to the largest group size."""

    query: Tensor  # (G,) long, index of the group's query
    rows: Tensor  # (G, K) long, rows of pool.responses; padding points at row 0
    mask: Tensor  # (G, K) bool, True for real candidates

    def __len__(self) -> int:
        return self.query.shape[0]

    def select(self, index: Tensor) -> "GroupIndex":
        return GroupIndex(self.query[index], self.rows[index], self.mask[index])


def sample_groups(
    pool: FeaturePool | StorePool,
    group_size: int,
    groups_per_query: int,
    generator: torch.Generator,
    require_contrast: bool = True,
) -> GroupIndex:
    """Listwise groups: `groups_per_query` random draws of `group_size` distinct candidates per query.

    With `require_contrast`, groups whose real labels are all equal (for 0/1 labels: no positive or
    no negative) are dropped. Deterministic given the generator's state.
    """
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 for listwise groups, got {group_size}")
    if groups_per_query < 1:
        raise ValueError(f"groups_per_query must be >= 1, got {groups_per_query}")
    counts = pool.offsets.diff()
    width = min(group_size, int(counts.max()))
    parts: list[tuple[Tensor, Tensor]] = []  # (query index (G,), rows (G, width)) per distinct K
    # Queries with the same K are drawn together: argsort of uniform noise gives one random
    # permutation per row, and its first `group_size` entries are distinct candidates.
    for count in counts.unique().tolist():
        same = (counts == count).nonzero().squeeze(1)
        repeats = 1 if count <= group_size else groups_per_query
        query = same.repeat_interleave(repeats)
        picks = torch.rand(len(query), count, generator=generator).argsort(dim=1)[:, :group_size]
        rows = torch.zeros(len(query), width, dtype=torch.long)
        rows[:, : picks.shape[1]] = pool.offsets[query, None] + picks
        parts.append((query, rows))
    query = torch.cat([q for q, _ in parts])
    rows = torch.cat([r for _, r in parts])
    mask = torch.arange(width)[None, :] < counts[query, None].clamp(max=group_size)
    rows = rows.masked_fill(~mask, 0)
    index = GroupIndex(query, rows, mask)
    if require_contrast:
        labels = pool.labels[rows]
        high = labels.masked_fill(~mask, float("-inf")).amax(dim=1)
        low = labels.masked_fill(~mask, float("inf")).amin(dim=1)
        index = index.select((high > low).nonzero().squeeze(1))
    return index


def pointwise_examples(pool: FeaturePool | StorePool) -> GroupIndex:
    """Every candidate once, as a group of size 1 (all N of them)."""
    counts = pool.offsets.diff()
    query = torch.repeat_interleave(torch.arange(pool.num_queries), counts)
    rows = torch.arange(int(counts.sum()))[:, None]
    return GroupIndex(query, rows, torch.ones_like(rows, dtype=torch.bool))


@dataclass
class Batch:
    """Padded model inputs for B groups."""

    instruction: Tensor  # (B, H)
    responses: Tensor  # (B, K, H)
    labels: Tensor  # (B, K), 0 at padding
    mask: Tensor  # (B, K) bool


def collate(pool: FeaturePool | StorePool, groups: GroupIndex) -> Batch:
    """Gather the features of `groups` from `pool` into one padded batch (on the pool's device)."""
    if isinstance(pool, StorePool):
        return pool.collate(groups)
    device = pool.responses.device
    rows, mask = groups.rows.to(device), groups.mask.to(device)
    return Batch(
        instruction=pool.instructions[groups.query.to(device)],
        responses=pool.responses[rows],
        labels=pool.labels[rows].masked_fill(~mask, 0.0),
        mask=mask,
    )


def pad_queries(queries: Sequence[QueryLike], dtype: torch.dtype = torch.float32) -> Batch:
    """Whole queries (all candidates) as one padded batch, e.g. to score a validation set."""
    pool = FeaturePool.from_queries(queries, dtype=dtype)
    counts = pool.offsets.diff()
    width = int(counts.max())
    position = torch.arange(width)[None, :]
    mask = position < counts[:, None]
    rows = (pool.offsets[:-1, None] + position).masked_fill(~mask, 0)
    return collate(pool, GroupIndex(torch.arange(pool.num_queries), rows, mask))


NORM_FIT_BYTES = 32 << 20  # float32 response features a StorePool reads to fit the input normalisation


@dataclass
class StorePool:
    """A feature store's problems as a training pool whose response features stay in the store.

    In memory: what group sampling reads (`labels`, `offsets`), the (Q, H) instructions (1/N of
    the features) and the fusion signals; each batch's responses are read from the store when the
    batch is collated (`FeatureStore.feature_rows`, which drops the pages after), so memory is that
    of one batch however large the store. Query q is store problem `problems[q]`; rows are numbered
    as in the `FeaturePool` of `store_queries(store, layer)`, so both pools give the same groups,
    batches and scores.
    """

    store: FeatureStore  # where the responses are read (memory-mapped, or in memory for a small store)
    layer: int  # hidden_states index of the features
    problems: np.ndarray  # (Q,) int64, store positions of the queries
    instructions: Tensor  # (Q, H) float32
    labels: Tensor  # (Q * N,) float32, query-major
    offsets: Tensor  # (Q + 1,) long, q * N
    mean_logprob: Tensor  # (Q, N) float32, for score fusion
    vote_keys: list  # Q lists of N answer keys (None = no answer), for score fusion
    query_ids: list[str]  # "family/index", as store_queries names them
    device: str | torch.device = "cpu"  # where collated batches go

    @classmethod
    def from_store(cls, store: FeatureStore, layer: int | None = None) -> "StorePool":
        """The pool of every problem of `store` at `layer` (default: its first). Reads only the instructions."""
        layer = store.layers[0] if layer is None else layer
        slot = store.layers.index(layer) if layer in store.layers else None
        if slot is None:
            raise ValueError(f"layer {layer} is not in this store; it has layers {list(store.layers)}")
        num_problems, n = len(store.problems), store.num_candidates
        return cls(
            # `store.instruction` reads only the instructions (1/N of the features) and the store keeps them
            store=store, layer=layer, problems=np.arange(num_problems, dtype=np.int64),
            instructions=store.instruction[:, slot].contiguous(), labels=store.labels().reshape(-1),
            offsets=torch.arange(num_problems + 1, dtype=torch.long) * n,
            # straight from the column (what store_queries reads, without a Python float per candidate)
            mean_logprob=torch.tensor(store.candidates["mean_logprob"].to_numpy(dtype="float32")).view(num_problems, n),
            vote_keys=store.column("vote_key"), query_ids=[f"{p.family}/{i}" for i, p in enumerate(store.problems)],
        )

    def __len__(self) -> int:
        return self.num_queries

    @property
    def num_queries(self) -> int:
        return len(self.problems)

    @property
    def num_candidates(self) -> int:
        return self.store.num_candidates

    @property
    def hidden_size(self) -> int:
        return self.instructions.shape[1]

    def label_rows(self) -> list[Tensor]:
        """The labels as Q tensors (N,), as each query's `labels`."""
        return list(self.labels.view(self.num_queries, -1))

    def subset(self, queries: Sequence[int]) -> "StorePool":
        """The pool of some of its queries, in the given order (no feature is read)."""
        index = torch.as_tensor(list(queries), dtype=torch.long)
        n = self.num_candidates
        return StorePool(
            store=self.store, layer=self.layer, problems=self.problems[index.numpy()],
            instructions=self.instructions[index], labels=self.labels.view(-1, n)[index].reshape(-1),
            offsets=torch.arange(len(index) + 1, dtype=torch.long) * n, mean_logprob=self.mean_logprob[index],
            vote_keys=[self.vote_keys[q] for q in index.tolist()], query_ids=[self.query_ids[q] for q in index.tolist()],
            device=self.device,
        )

    def to(self, device: str | torch.device) -> "StorePool":
        """The same pool with its instructions, and the batches it collates, on `device`."""
        moved = StorePool(**{**self.__dict__, "device": device})
        moved.instructions = self.instructions.to(device)
        return moved

    def features(self, queries: Sequence[int] | np.ndarray) -> tuple[Tensor, Tensor]:
        """(instructions (b, H), responses (b, N, H)) float32 of the pool's queries `queries`; reads only their rows."""
        queries = np.asarray(queries, dtype=np.int64)
        _, responses = self.store.feature_rows(self.layer, self.problems[queries])
        return self.instructions[torch.from_numpy(queries).to(self.instructions.device)], responses

    def collate(self, groups: GroupIndex) -> Batch:
        """One padded batch of `groups` (as `collate` of a FeaturePool), reading each of their prompts once, in store order."""
        prompts, local = torch.unique(groups.query, return_inverse=True)  # sorted: the shards are read front to back
        _, responses = self.features(prompts.numpy())  # (u, N, H)
        n = self.num_candidates
        candidate = (groups.rows - self.offsets[groups.query, None]).masked_fill(~groups.mask, 0)  # (G, K) within query
        device = self.device
        mask = groups.mask.to(device)
        return Batch(
            instruction=self.instructions[groups.query.to(self.instructions.device)].to(device),
            responses=responses.reshape(-1, self.hidden_size)[local[:, None] * n + candidate].to(device),
            labels=self.labels[groups.rows].to(device).masked_fill(~mask, 0.0),
            mask=mask,
        )

    def norm_fit_features(self, max_bytes: int = NORM_FIT_BYTES) -> tuple[Tensor, Tensor]:
        """(instructions (Q, H), responses (M, H)) to fit the input normalisation on, at most `max_bytes` of responses.

        Every response when they fit (then the statistics are those of the FeaturePool), else those
        of evenly spaced queries: a deterministic sample that spans the store's families.
        """
        per_query = self.num_candidates * self.hidden_size * 4
        count = min(self.num_queries, max(1, max_bytes // per_query))
        if count == self.num_queries:
            queries = np.arange(self.num_queries)
        else:
            queries = np.unique(np.linspace(0, self.num_queries - 1, count).round().astype(np.int64))
        _, responses = self.features(queries)
        return self.instructions, responses.reshape(-1, self.hidden_size).to(self.instructions.device)

    def summary(self) -> dict:
        """The counts of `FeaturePool.summary`."""
        n = self.num_candidates
        return {"num_queries": self.num_queries, "num_candidates": self.num_queries * n, "min_candidates": n,
                "max_candidates": n, "mean_label": float(self.labels.float().mean()), "hidden_size": self.hidden_size}
