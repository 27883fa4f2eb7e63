"""Which human labels a retrain may learn from: labels on verifiable prompts are checked against the checker.

The app is public, so an annotator can label on purpose against the truth (poisoning). Where
the truth is known it is used:
- A request is *verifiable* when its prompt is the prompt of a known task problem (the task
  stores the retrain already reads), whose checker can grade every candidate text.
- A label on a verifiable request is *checked* when its verdict is decidable: the request has
  at least one correct and one wrong candidate (a pick then agrees iff the picked candidate is
  correct; "all_bad" disagrees), or none is correct ("all_bad" agrees, any pick disagrees).
  Ties and requests whose candidates are all correct are not checked.
- Rule 1: a checked label that disagrees with the checker is never trained on.
- Rule 2: an annotator with at least `min_checked` checked labels who agrees with the checker
  on fewer than `min_agreement` of them is distrusted: none of their labels is used, on
  verifiable prompts or not, for training or for validation.

So an annotator who always picks a wrong answer on task prompts contributes nothing, and one
who is honest there but poisons free-form prompts is not caught: that is what the promotion
gate's task accuracy (`labeling.retrain.promotion_decision`) is for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from labeling.label_store import LabeledPreference, LabelStore
from ranker.rankers.preferences import ALL_BAD, TIE
from ranker.tasks import VERIFIABLE_CHECKERS, Problem, check_many


@dataclass(frozen=True)
class TrustConfig:
    """Thresholds of rule 2."""

    min_checked: int = 5  # checked labels needed before an annotator can be distrusted
    min_agreement: float = 0.6  # below this share of agreeing checked labels, the annotator is distrusted

    def __post_init__(self) -> None:
        if not isinstance(self.min_checked, int) or self.min_checked < 1:
            raise ValueError(f"min_checked must be an int >= 1, got {self.min_checked!r}")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ValueError(f"min_agreement must be in [0, 1], got {self.min_agreement!r}")


@dataclass
class AnnotatorTrust:
    checked: int = 0
    agreed: int = 0
    trusted: bool = True

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.checked if self.checked else None


@dataclass
class TrustReport:
    """What `filter_trusted` kept and why."""

    annotators: dict[str, AnnotatorTrust] = field(default_factory=dict)
    dropped_disagreeing: int = 0  # rule 1
    dropped_distrusted: int = 0  # rule 2

    @property
    def distrusted(self) -> list[str]:
        return sorted(name for name, trust in self.annotators.items() if not trust.trusted)


class TaskVerifier:
    """Grades the candidates of requests whose prompt is a known task problem; caches every verdict."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = {p.prompt: p for p in problems if p.checker in VERIFIABLE_CHECKERS}
        self._verdicts: dict[str, list[bool] | None] = {}

    def verdicts(self, store: LabelStore, request_id: str) -> list[bool] | None:
        """Per candidate (in candidate order): is it correct? None when the prompt is not a task's."""
        if request_id not in self._verdicts:
            request = store.get_request(request_id)
            problem = self.problems.get(request["prompt"])
            self._verdicts[request_id] = None if problem is None else [bool(v) for v in check_many(problem, request["candidates"])]
        return self._verdicts[request_id]


def label_agrees(preference: LabeledPreference, correct: Sequence[bool]) -> bool | None:
    """Does the label agree with the checker's verdicts (candidate order)? None when undecidable."""
    if preference.choice == TIE or all(correct):
        return None
    if preference.choice == ALL_BAD:
        return not any(correct)
    return bool(correct[preference.order_shown[int(preference.choice)]])


def filter_trusted(preferences: list[LabeledPreference], store: LabelStore, verifier: TaskVerifier | None,
                   config: TrustConfig | None = None) -> tuple[list[LabeledPreference], TrustReport]:
    """The preferences a retrain may use, by rules 1 and 2 of the module docstring."""
    report = TrustReport()
    if verifier is None or not verifier.problems:
        return list(preferences), report
    config = config or TrustConfig()
    agreement: dict[str, bool | None] = {}
    for preference in preferences:
        correct = verifier.verdicts(store, preference.request_id)
        verdict = None if correct is None else label_agrees(preference, correct)
        agreement[preference.label_id] = verdict
        trust = report.annotators.setdefault(preference.annotator, AnnotatorTrust())
        if verdict is not None:
            trust.checked += 1
            trust.agreed += int(verdict)
    for trust in report.annotators.values():
        trust.trusted = trust.checked < config.min_checked or trust.agreed / trust.checked >= config.min_agreement
    kept = []
    for preference in preferences:
        if not report.annotators[preference.annotator].trusted:
            report.dropped_distrusted += 1
        elif agreement[preference.label_id] is False:
            report.dropped_disagreeing += 1
        else:
            kept.append(preference)
    return kept, report

