"""RankerService on the tiny random model: limits, identity and roles, rate limits, idempotence, one lane."""

import threading
import time

import pytest
import torch

from labeling.identity import AccessConfig, Forbidden
from labeling.limits import ServiceLimits
from labeling.ratelimit import Rate, RateLimited, RateLimits
from labeling.retrain import RetrainConfig
from labeling.service import RankerService, ServiceConfig

PROMPT = "What is 2 + 3?"
SMALL = dict(n=2, temperature=1.0, top_p=1.0, max_new_tokens=4)


def make_service(tmp_path, base, access=None, rates=None, limits=None, **config) -> RankerService:
    config = ServiceConfig(data_dir=tmp_path / "data", access=access or AccessConfig(local_mode=True),
                           rates=rates or RateLimits.unlimited(), limits=limits or ServiceLimits(),
                           retrain=RetrainConfig(every_k_labels=0), hub_backup=False, **config)
    return RankerService(config).start(base)


@pytest.fixture
def service(tmp_path, tiny_base):
    service = make_service(tmp_path, tiny_base)
    yield service
    service.close()


@pytest.fixture
def local(service):
    return service.identify(annotator="alice")


def stored_everything(service):
    return service.labels.revision()


# --- limits, checked before any model work ----------------------------------------------------


@pytest.mark.parametrize(
    "prompt, message",
    [
        ("x" * 1_000_000, "1,000,000 characters long; the limit is 8,000"),
        ("a lone \udcff surrogate", "lone surrogate U+DCFF at character 7"),
        ("bell \x07 here", "control character U+0007 at character 5"),
        ("nul \x00", "control character U+0000"),
        ("   \n\t ", "the prompt is empty"),
        (None, "the prompt must be text, got NoneType"),
        (["a", "list"], "the prompt must be text, got list"),
    ],
)
def test_bad_prompts_are_refused_before_any_model_work(service, local, prompt, message):
    before = (service.lane.uses, stored_everything(service))
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("+", r"\+")):
        service.generate(local, prompt, **SMALL)
    assert time.perf_counter() - start < 0.5  # a 1 MB prompt is refused by its length, not tokenized
    assert (service.lane.uses, stored_everything(service)) == before


def test_prompt_token_limit_counts_the_chat_template(tmp_path, tiny_base):
    # The tiny tokenizer has one token per character; the chat template adds "<user>", "<eos>" and "<assistant>".
    service = make_service(tmp_path, tiny_base, limits=ServiceLimits(max_prompt_tokens=30))
    caller = service.identify()
    template_tokens = len("<user>") + 1 + len("<assistant>")  # "<eos>" is one special token
    fits = "y" * (30 - template_tokens)
    assert service.generate(caller, fits, **SMALL).prompt_tokens == 30
    with pytest.raises(ValueError, match="the prompt is 31 tokens with the chat template; the limit is 30"):
        service.generate(caller, fits + "y", **SMALL)


def test_the_model_context_caps_the_prompt_limit(tmp_path, tiny_base):
    context = tiny_base.model.config.max_position_embeddings
    service = make_service(tmp_path, tiny_base, limits=ServiceLimits(max_prompt_tokens=10 * context, max_prompt_chars=10 * context))
    with pytest.raises(ValueError, match=f"the limit is {context - 4} "):
        service.generate(service.identify(), "z" * context, **SMALL)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"n": 0}, "N must be between 1 and 64, got 0"),
        ({"n": 65}, "N must be between 1 and 64, got 65"),
        ({"n": 2.5}, "N must be a whole number, got 2.5"),
        ({"n": "8"}, "N must be a whole number, got '8'"),
        ({"n": True}, "N must be a whole number, got True"),
        ({"temperature": float("nan")}, "temperature must be a finite number, got nan"),
        ({"temperature": 2.5}, "temperature must be between 0 and 2, got 2.5"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\], got 0"),
        ({"top_p": [1]}, "top_p must be a finite number"),
        ({"max_new_tokens": 0}, "max new tokens must be between 1 and 512, got 0"),
        ({"max_new_tokens": 10**9}, "max new tokens must be between 1 and 512"),
        ({"n": 64, "max_new_tokens": 512}, "N x max new tokens is 64 x 512 = 32768; the limit is 8192"),
        ({"seed": -2}, "seed must be -1 .random. or between 0 and 2147483647, got -2"),
        ({"seed": 2**40}, "seed must be -1"),
        ({"ranker_choice": "../../etc/passwd"}, "unknown ranker"),
        ({"ranker_choice": "default/v9999"}, "unknown version 'v9999'"),
        ({"profile": "../x"}, "profile must be 1-64 letters"),
        ({"profile": "p" * 200}, "profile is 200 characters long; the limit is 128"),
    ],
)
def test_bad_sampling_arguments_get_a_clear_error(service, local, changes, message):
    before = (service.lane.uses, stored_everything(service))
    with pytest.raises(ValueError, match=message):
        service.generate(local, PROMPT, **{**SMALL, **changes})
    assert (service.lane.uses, stored_everything(service)) == before


def test_limits_come_from_the_environment():
    limits = ServiceLimits.from_env({"LANGUAGE_RANKER_MAX_CANDIDATES": "16", "LANGUAGE_RANKER_MAX_TEMPERATURE": "1.5"})
    assert (limits.max_candidates, limits.max_temperature, limits.max_new_tokens) == (16, 1.5, 512)
    with pytest.raises(ValueError, match="LANGUAGE_RANKER_MAX_CANDIDATES must be a number, got 'many'"):
        ServiceLimits.from_env({"LANGUAGE_RANKER_MAX_CANDIDATES": "many"})
    with pytest.raises(ValueError, match="max_candidates must be a positive number, got 0"):
        ServiceLimits.from_env({"LANGUAGE_RANKER_MAX_CANDIDATES": "0"})


def test_a_clean_prompt_is_stored_as_typed_with_line_ends_normalised(service, local):
    generation = service.generate(local, "line one\r\nline two\ttab", **SMALL, seed=1)
    assert service.labels.get_request(generation.request_id)["prompt"] == "line one\nline two\ttab"
    assert len(generation.rows()) == 2 and service.lane.uses == 1


# --- identity and roles -----------------------------------------------------------------------


class FakeRequest:
    def __init__(self, session="s1", host="203.0.113.7", username=None, headers=None):
        self.session_hash, self.username, self.headers = session, username, headers or {}
        self.client = type("Client", (), {"host": host})()


def test_annotator_ids_come_from_the_request_not_from_an_argument():
    public = AccessConfig(admins=frozenset({"root-user"}), admin_token="t" * 32)
    from labeling.identity import identify

    anon = identify(public, FakeRequest("s1"), annotator="mallory")  # the argument is ignored off local mode
    assert anon.annotator.startswith("anon:") and anon.annotator == identify(public, FakeRequest("s1")).annotator
    assert anon.annotator != identify(public, FakeRequest("s2")).annotator and not anon.is_admin
    browser = identify(public, FakeRequest("s1"), browser_token="ab" * 16)
    assert browser.annotator == identify(public, FakeRequest("s9"), browser_token="ab" * 16).annotator  # survives a reload
    assert identify(public, FakeRequest(), browser_token="not-hex").annotator == anon.annotator  # malformed token: session id
    user = identify(public, FakeRequest(), oauth_username="root-user")
    assert (user.annotator, user.is_admin, user.username) == ("hf:root-user", True, "root-user")
    assert identify(public, FakeRequest(username="bob")).annotator == "hf:bob"  # Gradio's auth= login
    assert identify(public, FakeRequest(), admin_token="t" * 32).is_admin
    assert not identify(public, FakeRequest(), admin_token="t" * 31 + "u").is_admin
    local = AccessConfig(local_mode=True)
    assert identify(local, FakeRequest(host="127.0.0.1"), annotator="alice").annotator == "local:alice"
    assert identify(local, FakeRequest(host="127.0.0.1")).is_admin and not identify(local, FakeRequest()).is_admin
    with pytest.raises(ValueError, match="annotator must be 1-64 letters"):
        identify(local, None, annotator="../alice")


def test_client_address_behind_a_proxy():
    from labeling.identity import identify

    request = FakeRequest(host="10.0.0.1", headers={"x-forwarded-for": "198.51.100.4, 10.0.0.1"})
    assert identify(AccessConfig(trust_proxy=True), request).client == "198.51.100.4"
    assert identify(AccessConfig(trust_proxy=False), request).client == "10.0.0.1"


def test_access_config_from_the_environment():
    space = AccessConfig.from_env({"SPACE_ID": "me/app", "LANGUAGE_RANKER_ADMINS": "alice, bob ,", "LANGUAGE_RANKER_ADMIN_TOKEN": "x" * 20})
    assert space.admins == {"alice", "bob"} and not space.local_mode and space.trust_proxy and space.admin_token == "x" * 20
    assert "x" * 20 not in repr(space)
    assert AccessConfig.from_env({}).local_mode and not AccessConfig.from_env({}, server_name="0.0.0.0").local_mode
    with pytest.raises(ValueError, match="at least 16 characters"):
        AccessConfig.from_env({"LANGUAGE_RANKER_ADMIN_TOKEN": "short"})


def test_admin_actions_are_refused_to_everyone_else(tmp_path, tiny_base):
    service = make_service(tmp_path, tiny_base, access=AccessConfig(admins=frozenset({"boss"}), admin_token="k" * 20))
    visitor = service.identify(FakeRequest())
    for action, args in ((service.retrain, ("default",)), (service.rollback, ("default",)), (service.bootstrap, (2,))):
        with pytest.raises(Forbidden, match="for admins only"):
            action(visitor, *args)
    assert service.jobs == {} and service.bootstrap_state == "" and service.worker.queued() == []
    boss = service.identify(FakeRequest(), oauth_username="boss")
    with pytest.raises(ValueError, match="no current version to roll back from"):  # allowed, and told why it cannot
        service.rollback(boss, "default")
    assert service.retrain(service.identify(FakeRequest(), admin_token="k" * 20), "default") is True


# --- labels: idempotence, rate limits, bad input ----------------------------------------------


def test_a_retried_label_is_stored_once(service, local):
    generation = service.generate(local, PROMPT, **SMALL, seed=2)
    first = service.label(local, generation.request_id, "1", client_key="retry-1")
    again = service.label(local, generation.request_id, "1", client_key="retry-1")
    assert first == again and service.labels.count(annotator=local.annotator) == 1
    assert len(service.labels.labels_frame()) == 1


def test_relabelling_a_request_keeps_one_live_label_per_annotator(service, local):
    generation = service.generate(local, PROMPT, **SMALL, seed=2)
    service.label(local, generation.request_id, "0")
    newer = service.label(local, generation.request_id, "1")
    frame = service.labels.labels_frame(include_undone=False)
    assert list(frame.label_id) == [newer] and list(frame.choice) == ["1"]
    other = service.identify(annotator="bob")
    service.label(other, generation.request_id, "0")
    assert service.labels.count() == 2  # another annotator's label of the same request counts too


@pytest.mark.parametrize(
    "request_id, choice, message",
    [
        ("f" * 32, "0", "unknown request_id"),
        ("../../etc", "0", "request id must be the 32 hex characters"),
        (None, "0", "request id must be the 32 hex characters"),
        ("VALID", "9", r"choice must be a candidate index in \[0, 1\]"),
        ("VALID", "-1", "choice must be a candidate index"),
        ("VALID", ["0"], "choice must be a candidate index or one of"),
        ("VALID", "x" * 1000, "choice must be a candidate index or one of"),
    ],
)
def test_bad_labels_are_refused_and_nothing_is_stored(service, local, request_id, choice, message):
    generation = service.generate(local, PROMPT, **SMALL, seed=3)
    before = stored_everything(service)
    with pytest.raises(ValueError, match=message):
        service.label(local, generation.request_id if request_id == "VALID" else request_id, choice)
    assert stored_everything(service) == before


def test_labels_are_rate_limited_per_annotator_and_per_client(tmp_path, tiny_base):
    rates = RateLimits(labels_per_annotator=Rate(3, 60), labels_per_client=Rate(5, 60),
                       generations_per_annotator=Rate(0, 1), generations_per_client=Rate(0, 1))
    service = make_service(tmp_path, tiny_base, access=AccessConfig(), rates=rates)
    requests = [service.generate(service.identify(FakeRequest("g")), PROMPT, **SMALL, seed=s).request_id for s in range(4)]
    alice = service.identify(FakeRequest("alice"))
    for request_id in requests[:3]:
        service.label(alice, request_id, "0")
    with pytest.raises(RateLimited, match="Slow down: you sent 3 labels in the last 60 s, the limit; try again in 6. s"):
        service.label(alice, requests[3], "0")
    bob = service.identify(FakeRequest("bob"))  # same address as alice
    service.label(bob, requests[0], "1")
    service.label(bob, requests[1], "1")
    with pytest.raises(RateLimited, match="your address sent 5 labels"):
        service.label(bob, requests[2], "1")
    assert service.labels.count() == 5  # refused labels are not stored


def test_generations_are_rate_limited(tmp_path, tiny_base):
    rates = RateLimits(generations_per_annotator=Rate(2, 60))
    service = make_service(tmp_path, tiny_base, access=AccessConfig(), rates=rates)
    caller = service.identify(FakeRequest("g"))
    service.generate(caller, PROMPT, **SMALL)
    service.generate(caller, PROMPT, **SMALL)
    with pytest.raises(RateLimited, match="you sent 2 generations"):
        service.generate(caller, PROMPT, **SMALL)
    assert service.lane.uses == 2


def test_rate_limiter_window_slides():
    from labeling.ratelimit import RateLimiter

    now = [0.0]
    limiter = RateLimiter(Rate(2, 10), "labels", clock=lambda: now[0])
    limiter.hit("a"), limiter.hit("a")
    with pytest.raises(RateLimited) as refused:
        limiter.hit("a")
    assert refused.value.retry_after == pytest.approx(10.0)
    limiter.hit("b")  # other keys are independent
    now[0] = 10.5
    limiter.hit("a")  # both earlier events left the window
    assert Rate.parse("20/60") == Rate(20, 60.0)
    with pytest.raises(ValueError, match="COUNT/SECONDS"):
        Rate.parse("fast")
    with pytest.raises(ValueError, match="LANGUAGE_RANKER_RATE_LABELS_PER_CLIENT"):
        RateLimits.from_env({"LANGUAGE_RANKER_RATE_LABELS_PER_CLIENT": "x/y"})


# --- the ranked list first, the reward model after ---------------------------------------------


class CountingRM:
    """A stand-in RM: candidate k scores k + 0.5, and each call is recorded with the lane's state."""

    def __init__(self, service):
        self.service, self.calls = service, []

    def score(self, prompt, candidates):
        self.calls.append((prompt, len(candidates), self.service.lane.uses))
        return torch.arange(len(candidates), dtype=torch.float32) + 0.5


def test_the_ranked_request_is_stored_first_and_the_rm_scores_follow_in_the_lane(service, local):
    service.rm = rm = CountingRM(service)
    generation = service.generate(local, PROMPT, **SMALL, seed=4, with_rm=False)
    assert rm.calls == [] and generation.result.rm_scores is None
    assert service.labels.get_request(generation.request_id)["rm_scores"] is None
    uses = service.lane.uses
    assert service.score_rm(generation) is generation
    assert rm.calls == [(PROMPT, 2, uses + 1)] and service.lane.uses == uses + 1  # the RM ran inside the model lane
    assert generation.result.rm_scores.tolist() == [0.5, 1.5]
    assert service.labels.get_request(generation.request_id)["rm_scores"] == [0.5, 1.5]
    assert "rm_s" in generation.result.timings
    service.score_rm(generation)  # already scored: the RM is not run again
    assert len(rm.calls) == 1
    assert service.generate(local, PROMPT, **SMALL, seed=4).result.rm_scores.tolist() == [0.5, 1.5]  # with_rm=True: in one go


def test_stored_rm_scores_are_checked_and_never_replaced(service, local):
    request_id = service.generate(local, PROMPT, **SMALL, seed=4, with_rm=False).request_id
    for bad, message in (([1.0], r"one value per candidate \(2\)"), ([1.0, float("nan")], "finite"), ("xy", "rm_scores")):
        with pytest.raises(ValueError, match=message):
            service.labels.set_rm_scores(request_id, bad)
    assert service.labels.get_request(request_id)["rm_scores"] is None
    service.labels.set_rm_scores(request_id, [0.25, -1.0])
    service.labels.set_rm_scores(request_id, [0.25, -1.0])  # the same again: a no-op
    with pytest.raises(ValueError, match="never replaced"):
        service.labels.set_rm_scores(request_id, [2.0, 3.0])
    assert service.labels.get_request(request_id)["rm_scores"] == [0.25, -1.0]
    with pytest.raises(ValueError, match="unknown request_id"):
        service.labels.set_rm_scores("f" * 32, [0.0, 0.0])


def test_the_progress_bar_moves_once_per_decode_step(service, local):
    updates = []
    service.generate(local, PROMPT, n=2, temperature=1.0, top_p=1.0, max_new_tokens=12, seed=5,
                     progress=lambda fraction, what: updates.append((fraction, what)))
    fractions = [f for f, _ in updates]
    assert updates[0] == (0.1, "sampling 2 candidates")
    steps = [what for _, what in updates[1:]]
    assert 2 <= len(steps) <= 12 and steps[0] == "sampling 2 candidates: token 1 of at most 12"
    assert fractions == sorted(fractions) and fractions[-1] <= 0.9 + 1e-9  # forward only, and 0.9 at most


# --- rankings, grades and a second annotator ---------------------------------------------------


def test_a_typed_ranking_and_grades_are_stored_as_candidate_indices(service, local):
    generation = service.generate(local, PROMPT, n=3, temperature=1.0, top_p=1.0, max_new_tokens=4, seed=6, blind=True)
    order = generation.order  # order[p] is the candidate shown at position p + 1
    label_id, chosen = service.label_display(local, generation.request_id, "3 1 2", "5 . 1")
    row = service.labels.labels_frame(include_undone=False).iloc[-1]
    assert row.label_id == label_id and chosen == order[2] and row.choice == str(order[2])
    assert list(row.ranking) == [order[2], order[0], order[1]]
    assert row.grades == {order[0]: 5, order[2]: 1} and row.grade_scale == "stars"
    # Grades alone keep the live pick (the newer label replaces the older one, with the same choice).
    service.pick_position(local, generation.request_id, 2)
    _, chosen = service.label_display(local, generation.request_id, "", "+ - .")
    row = service.labels.labels_frame(include_undone=False).iloc[-1]
    assert chosen == order[1] and row.choice == str(order[1]) and row.grades == {order[0]: 1, order[1]: -1}
    assert row.grade_scale == "thumbs" and row.ranking is None and service.labels.count(annotator=local.annotator) == 1


@pytest.mark.parametrize(
    "ranking, grades, message",
    [
        ("", "", "type a ranking"),
        ("1 2", "", r"every position 1..3 once"),
        ("1 1 2", "", r"every position 1..3 once"),
        ("1 2 x", "", "positions separated by spaces"),
        ("", "5 4", "one grade per position"),
        ("", "5 + 1", "stars .* or thumbs"),
        ("", "5 9 1", "grades are 1-5"),
        ("9" * 500, "", "short text"),
    ],
)
def test_bad_typed_rankings_and_grades_are_refused_and_nothing_is_stored(service, local, ranking, grades, message):
    generation = service.generate(local, PROMPT, n=3, temperature=1.0, top_p=1.0, max_new_tokens=4, seed=6)
    before = stored_everything(service)
    with pytest.raises(ValueError, match=message):
        service.label_display(local, generation.request_id, ranking, grades)
    assert stored_everything(service) == before


def test_another_annotator_is_served_labelled_requests_blind_until_the_overlap(tmp_path, tiny_base):
    service = make_service(tmp_path, tiny_base, review_overlap=3)
    alice, bob, carol = (service.identify(annotator=name) for name in ("alice", "bob", "carol"))
    first = service.generate(alice, PROMPT, **SMALL, seed=7)
    second = service.generate(alice, PROMPT, **SMALL, seed=8)
    assert service.next_to_review(bob) is None  # nothing labelled yet
    service.label(alice, second.request_id, "1")
    service.label(alice, first.request_id, "0")
    served = service.next_to_review(bob)
    assert served.request_id == first.request_id and served.blind  # oldest first, blind
    assert sorted(served.order) == [0, 1] and served.result.texts == first.result.texts
    assert [r.keys() for r in served.rows()] == [{"position", "candidate", "text"}] * 2  # no scores shown
    # The reviewer's shuffle is theirs alone: positions of the generator's view still map through the generator's order.
    assert service.shown(first.request_id, bob.annotator)[0] == served.order
    assert service.shown(first.request_id, alice.annotator)[0] == first.order
    _, candidate = service.pick_position(alice, first.request_id, 1)
    assert candidate == first.order[0]
    service.label(alice, first.request_id, "0")  # her pick again, for the agreement below
    assert service.next_to_review(alice) is None  # she labelled both
    service.label(bob, first.request_id, "0")
    assert service.next_to_review(bob).request_id == second.request_id  # bob judged the first already
    assert service.next_to_review(carol).request_id == first.request_id  # 2 annotators < overlap 3
    service.label(carol, first.request_id, "1")
    assert service.next_to_review(carol).request_id == second.request_id  # the first is full now
    public = make_service(tmp_path / "public", tiny_base, access=AccessConfig())  # not local: no admin
    stranger = public.identify(FakeRequest("s"))
    with pytest.raises(Forbidden, match="admins only, since it shows their prompts"):
        public.next_to_review(stranger)
    public.close()
    agreement = service.agreement()
    # One item, picks [0, 0, 1]: P_bar = 1/3; p_0 = 2/3, p_1 = 1/3, P_e = 5/9; kappa = -1/2.
    assert agreement["items"] == 1 and agreement["kappa"] == pytest.approx(-0.5)
    service.close()


def test_the_review_overlap_is_checked():
    with pytest.raises(ValueError, match="LANGUAGE_RANKER_REVIEW_OVERLAP must be a whole number in 2..100"):
        ServiceConfig.from_env(__import__("pathlib").Path("."), environ={"LANGUAGE_RANKER_REVIEW_OVERLAP": "1"})
    with pytest.raises(ValueError, match="got 'two'"):
        ServiceConfig.from_env(__import__("pathlib").Path("."), environ={"LANGUAGE_RANKER_REVIEW_OVERLAP": "two"})


# --- one model, one lane ----------------------------------------------------------------------


def test_a_bootstrap_running_while_users_generate_changes_no_request(tmp_path, tiny_base, monkeypatch):
    """Every user request gets the candidates and features it gets when run alone."""
    import ranker.rankers.bootstrap
    from ranker.rankers.estimator import LanguageRanker
    from tests.labeling.synthetic import FAST, synthetic_queries

    sampled = []  # the random tiny model answers nothing right, so its store cannot train: fit a stand-in
    stand_in = LanguageRanker(kind="list", seed=0, steps=5, **FAST).fit(synthetic_queries(20))
    monkeypatch.setattr(ranker.rankers.bootstrap, "train_on_store", lambda store, layer, **kw: sampled.append(store) or stand_in)
    service = make_service(tmp_path, tiny_base)
    caller = service.identify(annotator="user")
    prompts = [f"What is {k} + {k}?" for k in range(6)]

    def run(seed):
        generation = service.generate(caller, prompts[seed], n=4, max_new_tokens=12, seed=seed)
        return generation.result.texts, generation.result.responses.clone(), generation.result.instruction.clone()

    alone = [run(seed) for seed in range(6)]
    state = {}
    threads = [threading.Thread(target=lambda s=s: state.__setitem__(s, run(s))) for s in range(6)]
    with service.lane:  # hold the lane until the bootstrap and all six users queue behind it
        service.bootstrap(caller, 2)
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while service.lane.waiting() < 7 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert service.lane.waiting() == 7, service.lane.waiting()
    for thread in threads:
        thread.join(120)
    service._bootstrap_thread.join(300)
    assert sorted(state) == list(range(6))  # every user request finished
    assert service.bootstrap_state == "done: v0001 is now the latest ranker", service.bootstrap_state
    assert tuple(sampled[0].responses.shape[:2]) == (10, 8)  # 5 families x 2 prompts, N=8, sampled while users waited
    assert service.lane.uses >= 6 + 6 + 1  # the solo runs, the concurrent ones, and the bootstrap's sampling
    assert service.lane.max_waiting >= 7  # they really did queue for the lane
    for seed in range(6):
        texts, responses, instruction = state[seed]
        assert texts == alone[seed][0]
        assert torch.equal(responses, alone[seed][1]) and torch.equal(instruction, alone[seed][2])


def test_one_retrain_worker_runs_every_profile_one_at_a_time(tmp_path, tiny_base, monkeypatch):
    import labeling.retrain as retrain

    service = make_service(tmp_path, tiny_base)
    running, overlap, order = [0], [0], []
    lock = threading.Lock()

    def slow(label_store, registry, base_train, val_store, current, config, profile, *rest):
        with lock:
            running[0] += 1
            overlap[0] = max(overlap[0], running[0])
        time.sleep(0.2)
        order.append(profile)
        with lock:
            running[0] -= 1
        return retrain.RetrainResult(None, False, "skipped: test", {}, {})

    monkeypatch.setattr(retrain, "retrain_once", slow)
    admin = service.identify()
    profiles = ["default", "alice", "bob", "carol"]
    assert [service.retrain(admin, p) for p in profiles] == [True] * 4
    assert service.retrain(admin, "alice") is False  # already queued: not twice
    for profile in profiles:
        assert service.jobs[profile].wait(30)
    assert overlap[0] == 1 and order == profiles


def test_profiles_and_retrain_queue_are_bounded(tmp_path, tiny_base):
    service = make_service(tmp_path, tiny_base, max_profiles=2)
    admin = service.identify()
    service.job_for("a"), service.job_for("b")
    with pytest.raises(ValueError, match="2 profiles are in use, the limit"):
        service.job_for("c")
    assert service.retrain_status("zzz")["state"] == "idle" and "zzz" not in service.jobs  # reading creates nothing
    assert admin.is_admin


def test_the_live_ranker_is_loaded_once_and_swapped_on_promotion(tmp_path, tiny_base, monkeypatch):
    from ranker.rankers.estimator import LanguageRanker
    from tests.labeling.synthetic import FAST, synthetic_queries

    service = make_service(tmp_path, tiny_base)
    ranker = LanguageRanker(kind="list", seed=0, steps=5, **FAST).fit(synthetic_queries(20))
    version = service.registry.add(ranker, {}, promoted=True, reason="test")
    loads = []
    real_load = service.registry.load
    monkeypatch.setattr(service.registry, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    first = service.ranker("latest retrained")
    assert service.ranker("latest retrained") is first and service.ranker("profile:nobody") is first
    assert len(loads) == 1
    newer = LanguageRanker(kind="list", seed=1, steps=5, **FAST).fit(synthetic_queries(20))
    v2 = service.registry.add(newer, {}, promoted=True, reason="test")
    service._on_promoted("default", v2, newer)  # what the retrain job calls
    assert service.ranker("latest retrained") is newer and len(loads) == 1
    assert version == "v0001" and v2 == "v0002"


# --- restart: labels and ranker versions come back from the Hub backup ------------------------


def test_a_restarted_app_restores_labels_and_the_live_ranker_from_the_hub(tmp_path, tiny_base):
    from labeling.sync import HubBackup
    from ranker.rankers.estimator import LanguageRanker
    from tests.labeling.fake_hub import LocalFolderHub
    from tests.labeling.synthetic import FAST, synthetic_queries

    hub = LocalFolderHub(tmp_path / "hub")
    hub.create_repo("me/backup", repo_type="dataset", private=True)

    def run(folder):
        service = RankerService(ServiceConfig(data_dir=folder, access=AccessConfig(local_mode=True),
                                              rates=RateLimits.unlimited(), hub_backup=False,
                                              retrain=RetrainConfig(every_k_labels=0)))
        backup = HubBackup(hub, "me/backup", service.labels, service.registry)
        return service.start(tiny_base, backup=backup)

    first = run(tmp_path / "first")
    caller = first.identify(annotator="alice")
    generation = first.generate(caller, PROMPT, **SMALL, seed=5)
    label_id = first.label(caller, generation.request_id, "1", client_key="k-1")
    ranker = LanguageRanker(kind="list", seed=0, steps=5, **FAST).fit(synthetic_queries(20))
    version = first.registry.add(ranker, {}, promoted=True, reason="test")
    first.close()  # a last push on the way out

    second = run(tmp_path / "second")  # a new machine: an empty data folder
    assert "restored from the Hub" in second.backup_note
    assert list(second.labels.labels_frame().label_id) == [label_id]
    assert second.labels.get_request(generation.request_id)["candidates"] == generation.result.texts
    assert second.registry.current() == version
    restored = second.ranker("latest retrained")
    queries = synthetic_queries(3, seed=9)
    assert torch.allclose(restored.score(queries[0].instruction, queries[0].responses),
                          ranker.score(queries[0].instruction, queries[0].responses))
    assert second.label(second.identify(annotator="alice"), generation.request_id, "1", client_key="k-1") == label_id
    second.close()


def test_the_data_folder_is_private_and_a_read_only_one_is_refused_clearly(tmp_path, tiny_base):
    service = make_service(tmp_path, tiny_base)
    assert (service.data_dir.stat().st_mode & 0o777) == 0o700  # sandboxed code of another user cannot read it
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="exists and is not a folder"):
        RankerService(ServiceConfig(data_dir=blocker, hub_backup=False))
