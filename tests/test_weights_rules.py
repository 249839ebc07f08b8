"""The rules of `weights=auto` on listings (no hub): cache/selection.py, Settings.selection, spec parsing."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from preloader.api import settings_for
from preloader.cache import records
from preloader.cache.layout import Layout
from preloader.cache.selection import Selection, quant_of
from preloader.config import Settings
from preloader.errors import ConfigError, NotFoundError
from preloader.spec import RepoSpec, is_quant_name

AUTO = Selection(weights="auto", repo="model org/x")


def listing(*paths: str) -> dict[str, int]:
    return {p: 10 + n for n, p in enumerate(paths)}


@pytest.mark.parametrize(("paths", "kept"), [
    # pickle weights go where the same folder has safetensors; training leftovers wherever safetensors exist
    (("model.safetensors", "pytorch_model.bin", "optimizer.pt", "scheduler.pt", "rng_state_3.pth",
      "training_args.bin", "config.json"), {"model.safetensors", "config.json"}),
    # sentence-transformers: a module folder with only pickle weights keeps them
    (("model.safetensors", "pytorch_model.bin", "2_Dense/pytorch_model.bin", "2_Dense/config.json"),
     {"model.safetensors", "2_Dense/pytorch_model.bin", "2_Dense/config.json"}),
    # diffusers: per component folder
    (("unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.bin",
      "text_encoder/pytorch_model.bin", "unet/diffusion_flax_model.msgpack"),
     {"unet/diffusion_pytorch_model.safetensors", "text_encoder/pytorch_model.bin"}),
    # other frameworks go when PyTorch weights exist, whole folders included
    (("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack", "rust_model.ot", "model.onnx", "onnx/model.onnx",
      "onnx/config.json", "openvino/openvino_model.xml", "openvino/openvino_model.bin", "coreml/a/weight.bin",
      "model.tflite", "m.mlmodel", "tokenizer.json"), {"pytorch_model.bin", "tokenizer.json"}),
    # ... and stay when there are none
    (("tf_model.h5", "onnx/model.onnx", "config.json"), {"tf_model.h5", "onnx/model.onnx", "config.json"}),
    # mixed safetensors and GGUF, no quantization named: the GGUF files go
    (("model.safetensors", "model-Q4_K_M.gguf"), {"model.safetensors"}),
    # one GGUF file whose name says no quantization: the only one
    (("model.gguf", "README.md"), {"model.gguf", "README.md"}),
    # GGUF: Q4_K_M by default, split parts whole, the projector of the same type first
    (("a-Q4_K_M-00001-of-00002.gguf", "a-Q4_K_M-00002-of-00002.gguf", "a-Q8_0.gguf", "mmproj-Q4_K_M.gguf",
      "mmproj-F16.gguf"), {"a-Q4_K_M-00001-of-00002.gguf", "a-Q4_K_M-00002-of-00002.gguf", "mmproj-Q4_K_M.gguf"}),
    (("a-q4_k_m.gguf", "a-Q8_0.gguf", "mmproj-model-f32.gguf", "mmproj-model-bf16.gguf"),
     {"a-q4_k_m.gguf", "mmproj-model-bf16.gguf"}),
])
def test_auto_keeps_what_the_service_loads(paths, kept):
    assert set(AUTO.apply(listing(*paths))) == kept


def test_an_index_keeps_only_its_shards_and_is_ignored_when_it_names_files_the_commit_lacks():
    files = listing("model.safetensors.index.json", "model-00001-of-00002.safetensors",
                    "model-00002-of-00002.safetensors", "consolidated.safetensors", "sub/model.safetensors")
    shards = frozenset({"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"})
    choice = AUTO.choose(files, {"model.safetensors.index.json": shards})
    assert set(choice.skipped) == {"consolidated.safetensors"}
    assert set(AUTO.apply(files)) == set(files)  # weight_map unknown: nothing guessed away
    assert set(AUTO.apply(files, {"model.safetensors.index.json": frozenset({"../escape.safetensors"})})) == set(files)


def test_gguf_several_quantizations_none_named_is_78_and_a_missing_one_66():
    files = listing("m-Q5_K_M.gguf", "m-Q8_0.gguf", "x.gguf", "y.gguf", "mmproj-F16.gguf")
    with pytest.raises(ConfigError, match=r"^model org/x holds several GGUF quantizations and none is named "
                                          r"\(no Q4_K_M\): Q5_K_M, Q8_0, x, y; name one as user/name:TYPE"):
        AUTO.apply(files)
    with pytest.raises(NotFoundError, match=r"has no GGUF quantization Q2_K; it has: Q5_K_M, Q8_0, x, y;"):
        Selection(weights="auto", quant="Q2_K").apply(files)
    assert set(Selection(weights="auto", quant="q5_k_m".upper()).apply(files)) == {"m-Q5_K_M.gguf",
                                                                                   "mmproj-F16.gguf"}


@pytest.mark.parametrize(("path", "quant"), [
    ("Llama-3.2-1B-Instruct-Q4_K_M.gguf", "Q4_K_M"), ("mistral-7b-instruct-v0.2.Q5_K_S.gguf", "Q5_K_S"),
    ("Qwen3-30B-A3B-UD-Q4_K_XL.gguf", "UD-Q4_K_XL"), ("BF16/Model-BF16-00001-of-00003.gguf", "BF16"),
    ("gemma-iq2_xxs.gguf", "IQ2_XXS"), ("IQ4_NL/part-00002-of-00002.gguf", "IQ4_NL"), ("model-f16.gguf", "F16"),
    ("phi-3-q4_0_4_4.gguf", "Q4_0_4_4"), ("model.gguf", "model"),
])
def test_quantization_of_a_file_name(path, quant):
    assert quant_of(path) == quant


@pytest.mark.parametrize("name", ["Q4_K_M", "q8_0", "IQ2_XS", "F16", "BF16", "UD-Q4_K_XL", "Q6_K", "TQ1_0"])
def test_quantization_names(name):
    assert is_quant_name(name)


@pytest.mark.parametrize("name", ["main", "v1.0", "dev", "refs/pr/1", "Q4", "Q4KM", "f16-branch", "q4_k_m/x"])
def test_revisions_that_are_not_quantization_names(name):
    assert not is_quant_name(name)


@given(st.text(max_size=40))
def test_quantization_parsing_never_raises_and_only_a_quantization_names_one(text):
    named = is_quant_name(text)
    assert named == is_quant_name(text.upper())
    if named:
        assert quant_of(f"model-{text}.gguf") == text.upper()
        assert RepoSpec("model", "org/x", text).names_quant
        assert not RepoSpec("dataset", "org/x", text).names_quant  # datasets have no quantizations


def test_settings_choose_the_selection_per_repo(tmp_path):
    layout = Layout.build(tmp_path / "hub")
    s = Settings(layout=layout, gguf_quant="Q8_0")
    assert s.selection(RepoSpec("dataset", "org/d")).weights == "all"  # datasets are never filtered
    assert s.selection(RepoSpec("model", "org/m")).quant == "Q8_0"
    assert s.selection(RepoSpec("model", "org/m", "q2_k")).quant == "Q2_K"  # the spec's wins
    assert s.selection(RepoSpec("model", "org/m", "main", "Q3_K_M")).quant == "Q3_K_M"
    assert not Settings(layout=layout, include=("*.json",)).selection(RepoSpec("model", "org/m")).auto
    ref = layout.ref_file(RepoSpec("model", "org/m", "Q2_K"))
    ref.parent.mkdir(parents=True)
    ref.write_text("0" * 40)  # a branch of that name fetched before: it wins
    assert s.selection(RepoSpec("model", "org/m", "Q2_K")).quant == "Q8_0"


@pytest.mark.parametrize(("keywords", "message"), [
    ({"weights": 3}, "invalid settings: weights=3: expected one of auto, all"),
    ({"gguf_quant": ["Q4_K_M"]}, "invalid settings: gguf_quant=['Q4_K_M']: expected a GGUF quantization type like "
                                 "Q4_K_M, Q8_0, IQ2_XS or BF16"),
    ({"gguf_quant": "Q4-K-M"}, "invalid settings: gguf_quant='Q4-K-M': expected a GGUF quantization type like "
                               "Q4_K_M, Q8_0, IQ2_XS or BF16"),
])
def test_api_keywords_are_checked(keywords, message):
    with pytest.raises(ConfigError) as error:
        settings_for("org/m", **keywords)
    assert str(error.value) == message


def test_api_keywords_set_the_selection():
    s = settings_for("org/m", weights="ALL", gguf_quant="iq2_xs")
    assert (s.weights, s.gguf_quant) == ("all", "IQ2_XS")


def test_an_offline_check_uses_the_recorded_shards_or_the_index_on_disk(tmp_path):
    layout = Layout.build(tmp_path / "hub")
    spec, commit = RepoSpec("model", "org/m"), "a" * 40
    shard = b"x" * 5
    files = {"model.safetensors.index.json": json.dumps({"weight_map": {"w": "s-1.safetensors"}}).encode(),
             "s-1.safetensors": shard}
    full = {**{p: len(b) for p, b in files.items()}, "consolidated.safetensors": 100}
    snapshot = layout.snapshot_dir(spec, commit)
    snapshot.mkdir(parents=True)
    for path, data in files.items():
        (snapshot / path).write_bytes(data)
    wanted = {p: len(b) for p, b in files.items()}
    records.write(layout, spec, records.Record(commit, full, dict(wanted)))  # a record without the shards
    auto = Selection(weights="auto")
    state = records.check(layout, spec, commit, selection=auto)
    assert state.complete and set(state.wanted) == set(files)
    (snapshot / "model.safetensors.index.json").unlink()
    assert not records.check(layout, spec, commit, selection=auto).complete
    records.write(layout, spec, records.Record(commit, full, dict(wanted), indexes={
        "model.safetensors.index.json": ["s-1.safetensors"]}))
    state = records.check(layout, spec, commit, selection=auto)
    assert state.missing == ("model.safetensors.index.json",) and "consolidated.safetensors" not in state.wanted


def test_an_index_planted_as_a_link_out_of_the_cache_is_never_read(tmp_path):
    layout = Layout.build(tmp_path / "hub")
    spec, commit = RepoSpec("model", "org/m"), "b" * 40
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({"weight_map": {"w": "s-1.safetensors"}}))
    snapshot = layout.snapshot_dir(spec, commit)
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors.index.json").symlink_to(outside)
    (snapshot / "s-1.safetensors").write_bytes(b"x" * 5)
    listing = {"model.safetensors.index.json": outside.stat().st_size, "s-1.safetensors": 5,
               "consolidated.safetensors": 100}
    complete = {p: s for p, s in listing.items() if p != "consolidated.safetensors"}
    records.write(layout, spec, records.Record(commit, listing, complete))
    state = records.check(layout, spec, commit, selection=Selection(weights="auto"))
    assert not state.complete and state.missing == ("consolidated.safetensors",)  # nothing skipped on its word
