"""Reliability and security figures of the launched app: bad inputs, a label storm during a retrain, crashes, the sandbox.

    .venv/bin/python bench/reliability.py [--clients 32] [--labels 20] [--out assets/results/reliability.json]

It starts the app (`python app.py`, embedded model) as a child process on 127.0.0.1 with a fresh
data folder, and:
1. sends bad inputs through the API (gradio_client, and plain JSON over HTTP where a client
   library would refuse to encode them) and prints how each was answered and whether anything
   was stored;
2. keeps a retrain running while `--clients` clients send `--labels` labels each at once, every
   fifth one retried with the same client key, twice: through gradio_client's `/label`, then
   through the JSON route `POST /api/label` (`labeling.http_api`). It prints labels submitted,
   stored and lost, duplicates, the label latency p50 / p99 (client-side, per call), the share
   of calls made while a retrain ran, and the CPU seconds the app and the clients spent;
3. SIGKILLs the app while clients label, and again during a retrain; after each restart it checks
   that every acknowledged label is stored and that every registered ranker version loads;
4. runs every probe of `ranker.tasks.sandbox_probes` and prints which were blocked.

Every request goes to 127.0.0.1; loops are bounded in count and time. Run it alone: a second
torch process on 2 cores distorts the latencies. The run takes about 10 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gradio_client import Client  # noqa: E402

from labeling.label_store import LabelStore  # noqa: E402
from labeling.registry import RankerRegistry  # noqa: E402
from ranker.rankers.estimator import LanguageRanker  # noqa: E402

PROMPT = "What is 7 + 5? Answer with just the number."
START_TIMEOUT_S = 300
# All bench clients share 127.0.0.1, so the per-client limits are raised for the storm; the
# per-annotator limits keep their defaults except where the storm would exceed them.
ENVIRONMENT = {
    "LANGUAGE_RANKER_LOCAL_MODE": "1",
    "LANGUAGE_RANKER_RETRAIN_EVERY": "0",
    "LANGUAGE_RANKER_RATE_LABELS_PER_CLIENT": "100000/60",
    "LANGUAGE_RANKER_RATE_GENERATIONS_PER_CLIENT": "100000/60",
    "LANGUAGE_RANKER_RATE_GENERATIONS_PER_ANNOTATOR": "1000/60",
    "GRADIO_ANALYTICS_ENABLED": "False",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AppProcess:
    """`python app.py` on 127.0.0.1 with a given data folder; SIGKILL-able and restartable."""

    def __init__(self, data_dir: Path, log: Path):
        self.data_dir, self.log, self.process, self.port = data_dir, log, None, None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> "AppProcess":
        self.port = free_port()
        env = {**os.environ, **ENVIRONMENT, "LANGUAGE_RANKER_DATA": str(self.data_dir)}
        env.pop("SPACE_ID", None)
        with open(self.log, "a") as log:
            self.process = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(self.port)], cwd=ROOT,
                                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the app exited with {self.process.returncode}; see {self.log}")
            try:
                Client(self.url, verbose=False)
                return self
            except Exception:
                time.sleep(1.0)
        self.kill()
        raise RuntimeError(f"the app did not answer within {START_TIMEOUT_S} s; see {self.log}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)


def error_text(call) -> tuple[str, str]:
    """("refused", message) when `call` raised, else ("accepted", repr of the answer)."""
    try:
        return "accepted", repr(call())[:100]
    except Exception as error:  # the answer is the point: print it
        return "refused", " ".join(str(error).split())[:140]


def raw_call(url: str, api_name: str, data: list) -> tuple[str, str]:
    """The REST API with an ASCII-escaped JSON body, as any HTTP client may send it."""
    import httpx

    with httpx.Client(base_url=url, timeout=60) as http:
        posted = http.post(f"/gradio_api/call/{api_name}", content=json.dumps({"data": data}),
                           headers={"content-type": "application/json"})
        if posted.status_code != 200:
            return "refused", f"HTTP {posted.status_code}: {posted.text[:120]}"
        stream = http.get(f"/gradio_api/call/{api_name}/{posted.json()['event_id']}").text
    event = [line for line in stream.splitlines() if line.startswith("event: ")][-1].removeprefix("event: ")
    payload = [line for line in stream.splitlines() if line.startswith("data: ")][-1].removeprefix("data: ")
    return ("refused" if event == "error" else "accepted"), payload[:140]


def bad_inputs(app: AppProcess, store: LabelStore) -> list[dict]:
    client = Client(app.url, verbose=False)
    request_id = client.predict(PROMPT, 2, 1.0, 1.0, 8, 1, "latest retrained", "default", api_name="/generate")[0]
    generate = lambda *args: lambda: client.predict(*args, api_name="/generate")  # noqa: E731
    label = lambda *args: lambda: client.predict(*args, api_name="/label")  # noqa: E731
    cases = [
        ("1 MB prompt", generate("x" * 1_000_000, 4, 1.0, 1.0, 24, -1, "latest retrained", "default")),
        ("empty prompt", generate("   ", 4, 1.0, 1.0, 24, -1, "latest retrained", "default")),
        ("control character in the prompt", generate("bell \x07", 4, 1.0, 1.0, 24, -1, "latest retrained", "default")),
        ("N = 65", generate("hi", 65, 1.0, 1.0, 24, -1, "latest retrained", "default")),
        ("N x max new tokens = 64 x 512", generate("hi", 64, 1.0, 1.0, 512, -1, "latest retrained", "default")),
        ("temperature = 5", generate("hi", 4, 5.0, 1.0, 24, -1, "latest retrained", "default")),
        ("top_p = 0", generate("hi", 4, 1.0, 0.0, 24, -1, "latest retrained", "default")),
        ("seed = 2**40", generate("hi", 4, 1.0, 1.0, 24, 2**40, "latest retrained", "default")),
        ("path-like ranker name", generate("hi", 4, 1.0, 1.0, 24, -1, "../../etc/passwd", "default")),
        ("path-like profile", generate("hi", 4, 1.0, 1.0, 24, -1, "latest retrained", "../etc")),
        ("unknown request id", label("f" * 32, "0", "bench", "")),
        ("malformed request id", label("../x", "0", "bench", "")),
        ("choice out of range", label(request_id, "99", "bench", "")),
        ("path-like annotator", label(request_id, "0", "../bench", "")),
        ("malformed client key", label(request_id, "0", "bench", "a b/c")),
    ]
    rows = []
    for name, call in cases:
        before = store.revision()
        outcome, answer = error_text(call)
        rows.append({"input": name, "outcome": outcome, "answer": answer, "stored_changed": store.revision() != before})
    for name, prompt in (("lone surrogate (plain JSON)", "a lone \udcff surrogate"), ("NUL byte (plain JSON)", "nul \x00")):
        before = store.revision()
        outcome, answer = raw_call(app.url, "generate", [prompt, 2, 1.0, 1.0, 4, -1, "latest retrained", "default"])
        rows.append({"input": name, "outcome": outcome, "answer": answer, "stored_changed": store.revision() != before})
    key = uuid.uuid4().hex
    first = client.predict(request_id, "0", "bench-retry", key, api_name="/label")
    before = store.revision()
    again = client.predict(request_id, "0", "bench-retry", key, api_name="/label")
    rows.append({"input": "the same label sent twice (same client key)", "outcome": "same id" if again == first else "NEW ID",
                 "answer": again, "stored_changed": store.revision() != before})
    return rows


def make_requests(client: Client, count: int, tag: str) -> list[str]:
    return [client.predict(f"Name a colour ({tag} {k}).", 2, 1.0, 1.0, 2, k, "latest retrained", "default",
                           api_name="/generate")[0] for k in range(count)]


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def label_storm(app: AppProcess, store: LabelStore, clients: int, labels_each: int, route: str) -> dict:
    """route "gradio": gradio_client's /label; "json": POST /api/label with httpx (labeling.http_api)."""
    import httpx

    admin = Client(app.url, verbose=False)
    requests = make_requests(admin, labels_each, f"storm {route}")
    for k, request_id in enumerate(requests):  # enough labels for a real retrain (min_labels), before the storm
        admin.predict(request_id, str(k % 2), "storm-seed", "", api_name="/label")
    before = set(store.labels_frame().label_id)
    timeline, storm_over = [], threading.Event()  # (time, retrain running?) polled every 0.2 s

    def keep_retraining() -> None:
        """Poll the retrain, and start it again whenever it finishes, until the storm is over."""
        deadline = time.monotonic() + 900
        while not storm_over.is_set() and time.monotonic() < deadline:
            state = admin.predict("default", api_name="/retrain_status")["state"]
            timeline.append((time.monotonic(), state == "running"))
            if state in ("idle", "failed"):
                admin.predict("default", "", api_name="/retrain")
            time.sleep(0.2)

    watcher = threading.Thread(target=keep_retraining, daemon=True)
    watcher.start()
    deadline = time.monotonic() + 120
    while not any(running for _, running in timeline) and time.monotonic() < deadline:
        time.sleep(0.1)
    latencies, acknowledged, errors, retries = [], {}, [], {"sent": 0, "same_id": 0}
    lock = threading.Lock()

    def annotate(worker: int) -> None:
        try:
            if route == "gradio":
                client = Client(app.url, verbose=False)
                post = lambda request_id, choice, key: client.predict(  # noqa: E731
                    request_id, choice, f"storm-{worker}", key, api_name="/label")
            else:
                http = httpx.Client(base_url=app.url, timeout=60, headers={"x-annotator-token": uuid.uuid4().hex})

                def post(request_id, choice, key):
                    response = http.post("/api/label", json={"request_id": request_id, "choice": choice, "client_key": key})
                    if response.status_code != 200:
                        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
                    return response.json()["label_id"]

            def send(request_id: str, choice: str, key: str) -> str:
                start = time.monotonic()
                label_id = post(request_id, choice, key)
                with lock:
                    latencies.append((start, time.monotonic() - start))
                return label_id

            for k, request_id in enumerate(requests):
                key = uuid.uuid4().hex
                acknowledged[(worker, k)] = send(request_id, str(k % 2), key)
                if k % 5 == 0:  # a client retrying after a timeout: same key, same label
                    again = send(request_id, str(k % 2), key)
                    with lock:
                        retries["sent"] += 1
                        retries["same_id"] += int(again == acknowledged[(worker, k)])
        except Exception as error:  # counted and printed
            errors.append(f"client {worker}: {type(error).__name__}: {error}")

    threads = [threading.Thread(target=annotate, args=(w,)) for w in range(clients)]
    app_cpu, bench_cpu = process_cpu_s(app.process.pid), sum(os.times()[:2])
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    storm_s = time.monotonic() - started
    app_cpu, bench_cpu = process_cpu_s(app.process.pid) - app_cpu, sum(os.times()[:2]) - bench_cpu
    storm_over.set()
    watcher.join(60)
    frame = store.labels_frame()
    new = frame[~frame.label_id.isin(before)]
    stored = set(new.label_id)
    values = sorted(seconds for _, seconds in latencies)

    def retrain_running(at: float) -> bool:
        earlier = [running for polled, running in timeline if polled <= at]
        return bool(earlier and earlier[-1])

    during = sum(retrain_running(start) for start, _ in latencies)
    retrains = sum(1 for (_, was), (_, now) in zip(timeline, timeline[1:]) if now and not was) + int(bool(timeline and timeline[0][1]))
    quantile = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
    return {
        "route": {"gradio": "gradio_client /label", "json": "POST /api/label (httpx)"}[route],
        "clients": clients, "labels_each": labels_each, "submitted": clients * labels_each,
        "calls": len(latencies), "retries_same_id": f"{retries['same_id']}/{retries['sent']}",
        "stored": len(stored), "lost": len(set(acknowledged.values()) - stored), "duplicates": len(new) - len(set(acknowledged.values())),
        "errors": errors[:5], "p50_s": round(statistics.median(values), 3), "p99_s": round(quantile(0.99), 3),
        "max_s": round(values[-1], 3), "calls_during_retrain": during, "storm_s": round(storm_s, 1),
        "retrains_started": retrains, "app_cpu_s": round(app_cpu, 1), "client_cpu_s": round(bench_cpu, 1),
    }


def crash_while_labelling(app: AppProcess, store_dir: Path, seconds: float = 3.0) -> dict:
    client = Client(app.url, verbose=False)
    requests = make_requests(client, 40, "crash")
    acknowledged, stop = [], threading.Event()

    def annotate(worker: int) -> None:
        try:
            labeller = Client(app.url, verbose=False)
            for request_id in requests:
                if stop.is_set():
                    return
                acknowledged.append(labeller.predict(request_id, "0", f"crash-{worker}", uuid.uuid4().hex, api_name="/label"))
        except Exception:  # the app was killed under it: expected
            return

    threads = [threading.Thread(target=annotate, args=(w,), daemon=True) for w in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    with open(os.devnull, "w") as quiet, contextlib.redirect_stderr(quiet):  # the clients' threads print the broken streams
        app.kill()
        stop.set()
        for thread in threads:
            thread.join(30)
        app.start()
    stored = set(LabelStore(store_dir).labels_frame().label_id)
    return {"crash point": "SIGKILL while 8 clients label", "acknowledged": len(acknowledged),
            "acknowledged_lost": len(set(acknowledged) - stored), "app_restarted": True}


def registry_consistent(folder: Path) -> tuple[bool, str]:
    registry = RankerRegistry(folder)
    history = registry.history()
    for entry in history:
        LanguageRanker.load(registry.path(entry["version"], entry["profile"]))
    leftovers = [p.name for p in folder.rglob("*") if p.is_dir() and p.name.startswith(".")]
    return not leftovers, f"{len(history)} versions load; staging folders left: {leftovers or 'none'}"


def crash_during_retrain(app: AppProcess, store_dir: Path) -> dict:
    client = Client(app.url, verbose=False)
    labels_before = LabelStore(store_dir).revision()
    client.predict("default", "", api_name="/retrain")
    deadline = time.monotonic() + 120
    while client.predict("default", api_name="/retrain_status")["state"] != "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(3.0)  # well inside the training
    app.kill()
    ok, detail = registry_consistent(store_dir / "rankers")
    app.start()
    after = LabelStore(store_dir).revision()
    return {"crash point": "SIGKILL 3 s into a retrain", "registry_consistent": ok, "detail": detail,
            "labels_unchanged": after[:2] == labels_before[:2], "app_restarted": True}


def sandbox_probes() -> list[dict]:
    from ranker.tasks.sandbox import sandbox_layers
    from ranker.tasks.sandbox_probes import probe_sandbox

    layers = sandbox_layers()
    return [{"probe": r.name, "attempt": r.attempt, "verdict": "pass" if r.passed else "fail", "host_unharmed": r.host_unharmed,
             "blocked": (not r.passed) and r.host_unharmed, "reason": r.reason[:100]} for r in probe_sandbox()], layers


STORM_COLUMNS = ["route", "clients", "submitted", "stored", "lost", "duplicates", "retries_same_id", "p50_s", "p99_s",
                 "max_s", "calls_during_retrain", "calls", "storm_s", "app_cpu_s", "client_cpu_s"]


def table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]).replace("|", "/") for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--labels", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "assets" / "results" / "reliability.json")
    args = parser.parse_args()
    if not (1 <= args.clients <= 64 and 1 <= args.labels <= 50):
        raise SystemExit("--clients must be 1-64 and --labels 1-50 (the storm is bounded)")
    work = Path(tempfile.mkdtemp(prefix="reliability-"))
    data_dir = work / "data"
    app = AppProcess(data_dir, work / "app.log").start()
    store = LabelStore(data_dir)
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
              "date": time.strftime("%Y-%m-%d")}
    try:
        result["bad_inputs"] = bad_inputs(app, store)
        print("## Bad inputs\n" + table(result["bad_inputs"], ["input", "outcome", "answer", "stored_changed"]), flush=True)
        result["label_storms"] = [label_storm(app, store, args.clients, args.labels, route) for route in ("gradio", "json")]
        print("\n## Label storms during a retrain\n" + table(result["label_storms"], STORM_COLUMNS), flush=True)
        result["crashes"] = [crash_while_labelling(app, data_dir), crash_during_retrain(app, data_dir)]
        print("\n## Crash points")
        for crash in result["crashes"]:
            print(table([crash], list(crash)), flush=True)
    finally:
        app.kill()
    result["sandbox"], result["sandbox_layers"] = sandbox_probes()
    print("\n## Sandbox\n" + table(result["sandbox"], ["probe", "verdict", "host_unharmed", "reason"]))
    print(f"layers: {result['sandbox_layers']}")
    blocked = sum(r["blocked"] for r in result["sandbox"])
    print(f"\nbad inputs refused: {sum(r['outcome'] == 'refused' for r in result['bad_inputs'])}/{len(result['bad_inputs']) - 1}, "
          f"stored anything: {sum(r['stored_changed'] for r in result['bad_inputs'])}")
    for storm in result["label_storms"]:
        print(f"labels via {storm['route']}: {storm['submitted']} submitted, {storm['stored']} stored, {storm['lost']} lost, "
              f"{storm['duplicates']} duplicates; p50 {storm['p50_s']} s, p99 {storm['p99_s']} s "
              f"({storm['calls_during_retrain']}/{storm['calls']} calls during a retrain)")
    print(f"crash points: {len(result['crashes'])}, acknowledged labels lost: {result['crashes'][0]['acknowledged_lost']}, "
          f"registry consistent: {result['crashes'][1]['registry_consistent']}")
    print(f"sandbox probes blocked: {blocked}/{len(result['sandbox'])}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
