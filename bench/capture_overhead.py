"""What does capturing ranking features during generation cost?

Runs plain `model.generate` and `ranker.capture.sampling.sample_candidates_batch` (generate with the
feature hooks, the per-step signals — raw log-probs, self-certainty and DeepConf's token
confidence — and the final decode step) on the same prompts with the same
seed, alternating which goes first, and reports the median of the per-pair time ratios.
It also times the alternative this design avoids: a second forward pass over every
prompt + candidate to read the features afterwards.

The last line printed is the capture ratio (target <= 1.02).

    python bench/capture_overhead.py                       # embedded model, CPU: 8 prompts x N=16, 64 new tokens
    python bench/capture_overhead.py --random-llama-8b     # GPU: random-init Llama-3.1-8B shape, bf16, N=64, 256 new tokens
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ranker.capture.base_model import BaseModel, load_base_model  # noqa: E402
from ranker.capture.confidence import StepSignals  # noqa: E402
from ranker.capture.fingerprint import ModelFingerprint  # noqa: E402
from ranker.capture.hidden_states import reference_hidden_states, resolve_layers  # noqa: E402
from ranker.capture.sampling import SamplingConfig, encode_prompts, eos_token_ids, sample_candidates_batch  # noqa: E402
from ranker.core.seeding import seeded  # noqa: E402

PROMPTS = [
    "What is 47 + 38? Answer with just the number.",
    "What is 91 - 56? Answer with just the number.",
    "What is 12 * 7? Answer with just the number.",
    "Tom has 23 apples and buys 19 more. How many apples does he have now?",
    "Which is larger, 58 or 85? Answer with just the number.",
    "Convert 3 kilometres to metres. Answer with just the number.",
    "Write a Python function add(a, b) that returns the sum of a and b.",
    "What is 64 + 29? Answer with just the number.",
]


def random_llama_8b(device: torch.device) -> BaseModel:
    """A random-init model with Llama-3.1-8B's shape, in bf16; the embedded tokenizer stands in."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    tokenizer = load_base_model("embedded", device="cpu").tokenizer
    config = LlamaConfig(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192, rope_theta=500000.0,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
    )
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    fingerprint = ModelFingerprint("random-llama-3.1-8b-shape", "random", 32, 4096)
    return BaseModel(model=model, tokenizer=tokenizer, fingerprint=fingerprint)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def plain_generate(base: BaseModel, prompts: list[str], config: SamplingConfig) -> tuple[float, torch.Tensor]:
    """Plain HF generate with the same inputs, sampling settings and seed as the capture path."""
    encoded = encode_prompts(base, prompts)
    n = config.num_candidates
    synchronize(base.device)
    start = time.perf_counter()
    with seeded(config.seed, base.device):
        sequences = base.model.generate(
            input_ids=encoded["input_ids"].repeat_interleave(n, dim=0),
            attention_mask=encoded["attention_mask"].repeat_interleave(n, dim=0),
            do_sample=True, temperature=config.temperature, top_p=config.top_p, top_k=config.top_k,
            max_new_tokens=config.max_new_tokens, eos_token_id=eos_token_ids(base), pad_token_id=base.tokenizer.pad_token_id,
        )
    synchronize(base.device)
    return time.perf_counter() - start, sequences


def capture_generate(base: BaseModel, prompts: list[str], config: SamplingConfig, layers) -> tuple[float, list]:
    synchronize(base.device)
    start = time.perf_counter()
    results = sample_candidates_batch(base, prompts, config, layers=layers, max_rows=len(prompts) * config.num_candidates)
    synchronize(base.device)
    return time.perf_counter() - start, results


@torch.no_grad()
def second_pass_seconds(base: BaseModel, results, layers: tuple[int, ...]) -> float:
    """One batched forward over every prompt + candidate (right-padded), reading `layers`."""
    sequences = [r.prompt_token_ids + c.token_ids for r in results for c in r.candidates]
    width = max(map(len, sequences))
    pad = base.tokenizer.pad_token_id
    input_ids = torch.tensor([s + [pad] * (width - len(s)) for s in sequences], device=base.device)
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences], device=base.device)
    synchronize(base.device)
    start = time.perf_counter()
    for chunk in range(0, len(sequences), 64):  # chunked, as a real second pass would be, to bound memory
        reference_hidden_states(base.model, input_ids[chunk : chunk + 64], layers, mask[chunk : chunk + 64])
    synchronize(base.device)
    return time.perf_counter() - start


def breakdown(base: BaseModel, prompts: list[str], config: SamplingConfig, layers) -> None:
    """Time, inside one capture run, what capture adds to generate: each per-step signal, row selection, the final step."""
    import ranker.capture.sampling as sampling

    spent = {"final decode step": 0.0}
    original_final = sampling._final_decode_step

    def timed_final(*args, **kwargs):
        start = time.perf_counter()
        original_final(*args, **kwargs)
        spent["final decode step"] += time.perf_counter() - start

    StepSignals.timings, sampling._final_decode_step = spent, timed_final
    try:
        total, _ = capture_generate(base, prompts, config, layers)
    finally:
        StepSignals.timings, sampling._final_decode_step = None, original_final
    for part, seconds in spent.items():
        print(f"breakdown: {part} {seconds:.2f} s = {seconds / total:.1%} of the capture run ({total:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--random-llama-8b", action="store_true", help="GPU check: random Llama-3.1-8B shape, bf16")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=None, help="candidates per prompt (default 16; 64 with --random-llama-8b)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default 64; 256 with --random-llama-8b")
    parser.add_argument("--pairs", type=int, default=7, help="alternating plain/capture pairs")
    parser.add_argument("--layer", type=float, default=0.6)
    parser.add_argument("--breakdown", action="store_true", help="first time, in one capture run, each per-step signal (log-probs, self-certainty, token confidence), the selection of unfinished rows and the final step")
    args = parser.parse_args()

    if args.random_llama_8b:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        base, n, new_tokens = random_llama_8b(device), args.n or 64, args.max_new_tokens or 256
    else:
        base, n, new_tokens = load_base_model("embedded"), args.n or 16, args.max_new_tokens or 64
    prompts = (PROMPTS * ((args.prompts + len(PROMPTS) - 1) // len(PROMPTS)))[: args.prompts]
    config = SamplingConfig(num_candidates=n, temperature=1.0, max_new_tokens=new_tokens, seed=1234)
    layers = resolve_layers(args.layer, base.num_layers)
    device_name = torch.cuda.get_device_name() if base.device.type == "cuda" else f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    print(f"model: {base.fingerprint.model_id} ({base.num_layers} layers, hidden {base.hidden_size}, {base.model.dtype}) on {device_name}")
    print(f"workload: {len(prompts)} prompts x N={n}, up to {new_tokens} new tokens, layer {layers[0]}, {args.pairs} alternating pairs")

    # Warm-up: one of each, not timed.
    plain_generate(base, prompts[:1], SamplingConfig(num_candidates=2, max_new_tokens=4, seed=0))
    capture_generate(base, prompts[:1], SamplingConfig(num_candidates=2, max_new_tokens=4, seed=0), layers)
    if args.breakdown:
        breakdown(base, prompts, config, layers)

    plain_times, capture_times, ratios = [], [], []
    for pair in range(args.pairs):
        if pair % 2 == 0:
            plain_seconds, sequences = plain_generate(base, prompts, config)
            capture_seconds, results = capture_generate(base, prompts, config, layers)
        else:
            capture_seconds, results = capture_generate(base, prompts, config, layers)
            plain_seconds, sequences = plain_generate(base, prompts, config)
        plain_times.append(plain_seconds)
        capture_times.append(capture_seconds)
        ratios.append(capture_seconds / plain_seconds)
        print(f"pair {pair + 1}: plain {plain_seconds:.2f} s, capture {capture_seconds:.2f} s, ratio {ratios[-1]:.3f}", flush=True)

    prompt_length = sequences.shape[1] - max(c.num_tokens for r in results for c in r.candidates)
    same = all(
        sequences[b * n + k, prompt_length : prompt_length + c.num_tokens].tolist() == c.token_ids
        for b, r in enumerate(results) for k, c in enumerate(r.candidates)
    )
    tokens = sum(c.num_tokens for r in results for c in r.candidates)
    cut = sum(c.finish_reason == "length" for r in results for c in r.candidates)
    print(f"same candidates from both paths: {same}; {tokens} generated tokens, {cut}/{len(prompts) * n} cut by the length limit")
    second = second_pass_seconds(base, results, layers)
    median_plain = statistics.median(plain_times)
    print(f"median plain generate {median_plain:.2f} s, median with capture {statistics.median(capture_times):.2f} s")
    print(f"a second forward pass over all candidates would add {second:.2f} s = {second / median_plain:.3f} x generation time (avoided)")
    print(f"capture ratio (median of per-pair capture/plain): {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
