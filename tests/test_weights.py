"""`PRELOADER_WEIGHTS=auto`: a run fetches what the service loads, on repos shaped like public ones
(localhub/shapes.py), judged by the bytes the hub sent (issue 21)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, preloader_env, run_preloader

BERT, ST, SHARDED, PICKLE = "org/bert-formats", "org/st-variants", "org/sharded-consolidated", "org/pickle-only"
LLAMA, VISION, NOQ4, BRANCHY = "org/llama-gguf", "org/vision-gguf", "org/noq4-gguf", "org/branchy-gguf"
TOKENIZER = {"vocab.txt", "tokenizer_config.json", "special_tokens_map.json"}
COMMON = {".gitattributes", "README.md"}
# What a default run must fetch, written out by hand (not computed by the code under test).
EXPECTED = {
    BERT: COMMON | TOKENIZER | {"config.json", "model.safetensors"},
    ST: COMMON | TOKENIZER | {"config.json", "model.safetensors", "modules.json", "1_Pooling/config.json",
                              "sentence_bert_config.json", "config_sentence_transformers.json"},
    SHARDED: COMMON | {"config.json", "params.json", "tokenizer.json", "tokenizer.model.v3",
                       "model.safetensors.index.json", "model-00001-of-00003.safetensors",
                       "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"},
    PICKLE: COMMON | {"config.json", "pytorch_model.bin"},
    LLAMA: COMMON | {"Llama-3.2-1B-Instruct-Q4_K_M.gguf"},
    VISION: COMMON | {"params", "Q4_K_M/vision-Q4_K_M-00001-of-00002.gguf",
                      "Q4_K_M/vision-Q4_K_M-00002-of-00002.gguf", "mmproj-F16.gguf"},
}


def sent(hub, repo: str) -> dict[str, int]:
    """{file: body bytes} the hub sent for `repo`'s files."""
    from localhub.records import parse_resolve

    out: dict[str, int] = {}
    for record in hub.requests("GET", "/resolve/"):
        parsed = parse_resolve(record.path)
        if parsed and parsed[0] == repo:
            out[parsed[2]] = out.get(parsed[2], 0) + record.body_bytes
    return out


def snapshot(cache, repo: str, commit: str):
    return cache / f"models--{repo.replace('/', '--')}" / "snapshots" / commit


def record(cache, repo: str, commit: str) -> dict:
    path = cache.parent / "preloader" / "complete" / f"models--{repo.replace('/', '--')}" / f"{commit}.json"
    return json.loads(path.read_text())


@pytest.mark.parametrize("repo", sorted(EXPECTED))
def test_a_default_run_fetches_what_the_service_loads_and_nothing_else(hub, mirrors, cache, repo):
    proc = run_preloader(["run"], preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=repo))
    assert proc.returncode == 0, proc.stderr
    files = mirrors.files("model", repo, "main")
    got = sent(hub, repo)
    assert set(got) == EXPECTED[repo]
    wanted = sum(len(files[p]) for p in EXPECTED[repo])
    index = len(files.get("model.safetensors.index.json", b""))  # read once to learn the shards, then fetched
    assert sum(got.values()) == wanted + index
    commit = mirrors.sha("model", repo, "main")
    on_disk = {p.relative_to(snapshot(cache, repo, commit)).as_posix()
               for p in snapshot(cache, repo, commit).rglob("*") if not p.is_dir()}
    assert on_disk == EXPECTED[repo]
    skipped = set(files) - EXPECTED[repo]
    line = next(x for x in proc.stderr.splitlines() if "weights.skipped" in x and f"repo={repo} " in x)
    assert f"files={len(skipped)} bytes={sum(len(files[p]) for p in skipped)} " in line
    assert [x for x in proc.stderr.splitlines() if "PRELOADER_WEIGHTS=all" in x] == [
        f"preloader: weights=auto skipped {len(skipped)} file(s), {sum(len(files[p]) for p in skipped):,} bytes, "
        f"the service does not load ({', '.join(sorted({p.rsplit('/', 1)[-1] for p in skipped})[:6])}"
        f"{f' and {len(skipped) - 6} more' if len(skipped) > 6 else ''}) in 1 repo(s); "
        "PRELOADER_WEIGHTS=all fetches every file"]
    assert record(cache, repo, commit)["selections"] == [
        {"weights": "auto", "quant": None, "include": [], "exclude": []}]


def test_all_later_fetches_only_the_difference_and_the_record_says_both(hub, mirrors, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=BERT)
    assert run_preloader(["run"], env).returncode == 0
    hub.reset()
    proc = run_preloader(["run"], env | {"PRELOADER_WEIGHTS": "all"})
    assert proc.returncode == 0, proc.stderr
    files = mirrors.files("model", BERT, "main")
    got = sent(hub, BERT)
    assert set(got) == set(files) - EXPECTED[BERT]
    assert sum(got.values()) == sum(len(files[p]) for p in set(files) - EXPECTED[BERT])
    assert "PRELOADER_WEIGHTS=all fetches" not in proc.stderr
    commit = mirrors.sha("model", BERT, "main")
    assert [s["weights"] for s in record(cache, BERT, commit)["selections"]] == ["auto", "all"]
    hub.reset()  # and auto again: complete, nothing fetched
    assert run_preloader(["run"], env).returncode == 0 and sent(hub, BERT) == {}


def test_include_replaces_auto_and_exclude_applies_on_top(hub, mirrors, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=BERT, PRELOADER_INCLUDE="*.json,*.bin")
    assert run_preloader(["run"], env).returncode == 0
    assert set(sent(hub, BERT)) == {"config.json", "pytorch_model.bin", "tokenizer_config.json",
                                    "special_tokens_map.json", "coreml/fill-mask/float32_model.mlpackage/Data/"
                                    "com.apple.CoreML/weights/weight.bin"}
    hub.reset()
    other = cache.parent.parent / "other" / "hub"  # identical files would be linked from the first repo
    env = preloader_env(hub, other, RUNPOD_HUGGINGFACE_MODEL=ST, PRELOADER_EXCLUDE="README.md,vocab.txt")
    assert run_preloader(["run"], env).returncode == 0
    assert set(sent(hub, ST)) == EXPECTED[ST] - {"README.md", "vocab.txt"}


def test_gguf_default_named_and_env_quantizations(hub, mirrors, cache):
    commit = mirrors.sha("model", LLAMA, "main")
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=f"{LLAMA}:q8_0")  # any case
    proc = run_preloader(["run"], env)
    assert proc.returncode == 0, proc.stderr
    assert set(sent(hub, LLAMA)) == COMMON | {"Llama-3.2-1B-Instruct-Q8_0.gguf"}
    refs = cache / "models--org--llama-gguf" / "refs"
    assert sorted(p.name for p in refs.iterdir()) == ["main"] and (refs / "main").read_text() == commit
    # Offline, the same spec starts from the cache: no hub, no branch named so.
    hub.reset()
    proc = run_preloader(["run"], env | {"PRELOADER_OFFLINE": "1"})
    assert proc.returncode == 0 and hub.count() == 0, proc.stderr
    assert run_preloader(["status", f"{LLAMA}:Q8_0"], env).returncode == 0
    assert run_preloader(["status", f"{LLAMA}:Q6_K"], env).returncode == 1
    # hf:// form and PRELOADER_GGUF_QUANT: only the difference.
    proc = run_preloader(["run"], env | {"RUNPOD_HUGGINGFACE_MODEL": f"hf://{LLAMA}@Q2_K"})
    assert proc.returncode == 0, proc.stderr
    assert set(sent(hub, LLAMA)) == {"Llama-3.2-1B-Instruct-Q2_K.gguf"}
    hub.reset()
    proc = run_preloader(["run"], env | {"RUNPOD_HUGGINGFACE_MODEL": LLAMA, "PRELOADER_GGUF_QUANT": "Q6_K"})
    assert proc.returncode == 0, proc.stderr
    assert set(sent(hub, LLAMA)) == {"Llama-3.2-1B-Instruct-Q6_K.gguf"}


def test_gguf_without_q4_k_m_must_be_named(hub, mirrors, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=NOQ4)
    proc = run_preloader(["run"], env)
    assert proc.returncode == 78, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "preloader: error: model org/noq4-gguf holds several GGUF quantizations and none is named (no Q4_K_M): "
        "Q5_K_M, Q8_0; name one as user/name:TYPE or with PRELOADER_GGUF_QUANT, or fetch every file with "
        "PRELOADER_WEIGHTS=all")
    assert sent(hub, NOQ4) == {} and not (cache / "models--org--noq4-gguf" / "snapshots").exists()
    proc = run_preloader(["run"], env | {"RUNPOD_HUGGINGFACE_MODEL": f"{NOQ4}:Q4_0"})
    assert proc.returncode == 66 and "has no GGUF quantization Q4_0; it has: Q5_K_M, Q8_0" in proc.stderr
    proc = run_preloader(["run"], env | {"PRELOADER_GGUF_QUANT": "Q8_0"})
    assert proc.returncode == 0, proc.stderr
    files = mirrors.files("model", NOQ4, "main")
    assert sent(hub, NOQ4) == {p: len(files[p]) for p in COMMON | {"model-Q8_0.gguf"}}


def test_a_quantization_named_for_a_repo_without_gguf_files_is_66(hub, mirrors, cache):
    proc = run_preloader(["run"], preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=f"{BERT}:F16"))
    assert proc.returncode == 66
    assert proc.stderr.strip().splitlines()[-1] == (
        "preloader: error: model org/bert-formats: no branch or tag F16, and no GGUF files to choose the "
        "quantization F16 from; check the revision")
    assert sent(hub, BERT) == {}
    proc = run_preloader(["run"], preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=f"{BERT}:F16",
                                                PRELOADER_INCLUDE="config.json"))
    assert proc.returncode == 0 and set(sent(hub, BERT)) == {"config.json"}  # the files are named: main's


def test_a_branch_named_like_a_quantization_wins(hub, mirrors, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=f"{BRANCHY}:Q8_0")
    proc = run_preloader(["run"], env)
    assert proc.returncode == 0, proc.stderr
    assert set(sent(hub, BRANCHY)) == COMMON | {"branch.txt", "m-Q4_K_M.gguf"}
    refs = cache / "models--org--branchy-gguf" / "refs"
    assert (refs / "Q8_0").read_text() == mirrors.sha("model", BRANCHY, "Q8_0")
    hub.reset()
    assert run_preloader(["run"], env | {"PRELOADER_OFFLINE": "1"}).returncode == 0 and hub.count() == 0


def test_plan_says_what_auto_skips_from_the_cached_record_and_when_it_cannot(hub, mirrors, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=f"{SHARDED},{LLAMA}")
    before = json.loads(run_preloader(["plan"], env).stdout)
    assert before["weights"] == "auto"
    first = before["repos"][0]["weights"]
    assert first["known"] is False and first["skipped"] is None and "plan asks no hub" in first["why"]
    assert run_preloader(["run"], env).returncode == 0
    hub.reset()
    after = json.loads(run_preloader(["plan"], env).stdout)
    assert hub.count() == 0
    files = mirrors.files("model", SHARDED, "main")
    sharded, llama = (repo["weights"] for repo in after["repos"])
    assert sharded["skipped"] == ["consolidated.safetensors"]
    assert sharded["skipped_bytes"] == len(files["consolidated.safetensors"])
    assert llama["quant"] == "Q4_K_M" and len(llama["skipped"]) == 6


def test_manifest_records_the_chosen_files(hub, mirrors, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=VISION)
    code = "import json, os; print(open(os.environ['PRELOADER_MANIFEST']).read())"
    proc = run_preloader(["run", "--", sys.executable, "-c", code], env)
    assert proc.returncode == 0, proc.stderr
    entry = json.loads(proc.stdout)["repos"][0]
    assert entry["weights"]["quant"] == "Q4_K_M"
    assert set(entry["weights"]["chosen"]) == EXPECTED[VISION]


CONSUMERS = r"""
import json, sys, os
cache, manifest = sys.argv[1], json.load(open(os.environ["PRELOADER_MANIFEST"]))
chosen = {e["repo"]: e for e in manifest["repos"]}
from transformers import AutoModel
model = AutoModel.from_pretrained("org/bert-formats")
from sentence_transformers import SentenceTransformer
vector = SentenceTransformer("org/st-variants").encode("the cat sat on the mat")
from huggingface_hub import snapshot_download
paths = [snapshot_download(repo, local_files_only=True, allow_patterns=e["weights"]["chosen"])
         for repo, e in chosen.items()]
from safetensors import safe_open
sharded = chosen["org/sharded-consolidated"]["path"]
index = json.load(open(os.path.join(sharded, "model.safetensors.index.json")))
names = set()
for shard in sorted(set(index["weight_map"].values())):
    with safe_open(os.path.join(sharded, shard), "np") as f:
        names |= set(f.keys())
import gguf
llama = chosen["org/llama-gguf"]
gguf_path = [p for p in llama["weights"]["chosen"] if p.endswith(".gguf")][0]
reader = gguf.GGUFReader(os.path.join(llama["path"], gguf_path))
print(json.dumps({"bert": type(model).__name__, "st": len(vector), "paths": len(paths),
                  "shards": names == set(index["weight_map"]), "gguf": gguf_path, "tensors": len(reader.tensors)}))
"""


def test_consumers_start_offline_on_an_auto_snapshot(hub, mirrors, cache):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gguf")
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=f"{BERT},{ST},{SHARDED},{LLAMA}")
    proc = run_preloader(["run", "--", sys.executable, "-c", CONSUMERS, str(cache)], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen == {"bert": "BertModel", "st": 16, "paths": 4, "shards": True,
                    "gguf": "Llama-3.2-1B-Instruct-Q4_K_M.gguf", "tensors": 1}
    for repo in (BERT, ST, SHARDED, LLAMA):  # none of the skipped files (identical small files are linked)
        assert {"model.safetensors", "model-00001-of-00003.safetensors",
                "Llama-3.2-1B-Instruct-Q4_K_M.gguf"} & set(EXPECTED[repo]) <= set(sent(hub, repo)) <= EXPECTED[repo]


@pytest.mark.parametrize(("env", "message"), [
    ({"PRELOADER_WEIGHTS": "some"}, "PRELOADER_WEIGHTS='some': expected one of auto, all"),
    ({"PRELOADER_GGUF_QUANT": "Q4KM"},
     "PRELOADER_GGUF_QUANT='Q4KM': expected a GGUF quantization type like Q4_K_M, Q8_0, IQ2_XS or BF16"),
])
def test_bad_settings_are_one_line_78(cache, env, message):
    proc = subprocess.run([sys.executable, "-m", "preloader", "plan"], capture_output=True, text=True, cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", "PRELOADER_CACHE_DIR": str(cache), **env})
    assert proc.returncode == 78
    assert proc.stderr == f"preloader: error: invalid settings: {message}\n"


def test_repair_of_an_auto_snapshot_fetches_the_damaged_file_only(hub, mirrors, cache):
    env = preloader_env(hub, cache, RUNPOD_HUGGINGFACE_MODEL=BERT)
    assert run_preloader(["run"], env).returncode == 0
    weights = (snapshot(cache, BERT, mirrors.sha("model", BERT, "main")) / "model.safetensors").resolve()
    weights.write_bytes(b"\0" * weights.stat().st_size)
    assert run_preloader(["verify", BERT], env).returncode == 1  # the record goes with the damage
    hub.reset()
    proc = run_preloader(["verify", "--repair", BERT], env)
    assert proc.returncode == 0, proc.stderr
    assert sent(hub, BERT) == {"model.safetensors": len(mirrors.files("model", BERT, "main")["model.safetensors"])}
    assert run_preloader(["status", BERT], env).returncode == 0
