"""Test repos shaped like real ones, for `weights=auto` (issue 21, docs/weights.md).

Each repo carries its files in the relative sizes the public hub shows for the repo it
imitates (named beside it), scaled down; the weights a service loads are real (a
BertModel, a sentence-transformers model, safetensors shards an index names, GGUF files
`gguf.GGUFReader` opens), the others are seeded random bytes of the right size.

    org/bert-formats      google-bert/bert-base-uncased: safetensors, bin, h5, msgpack, ot, onnx
    org/st-variants       sentence-transformers/all-MiniLM-L6-v2: onnx/ and openvino/ variants
    org/sharded-consolidated  mistralai/Mistral-7B-Instruct-v0.3: 3 shards + consolidated.safetensors
    org/pickle-only       an older checkpoint: pytorch_model.bin (and tf_model.h5) only
    org/llama-gguf        bartowski/Llama-3.2-1B-Instruct-GGUF: seven quantizations
    org/vision-gguf       unsloth's layout: split quantizations in folders, mmproj projectors
    org/noq4-gguf         quantizations without Q4_K_M: one must be named

`SIZES` gives each file's size on the public hub; `SCALE` bytes stand for one GB.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import save as st_save

SCALE = 128 * 1024  # bytes here per GB on the public hub
GB = 1.0
MB = GB / 1000
ATTRS = ("*.bin *.safetensors *.gguf *.h5 *.msgpack *.onnx *.ot *.pt *.pth *.ckpt *.pkl *.tflite *.mlmodel "
         "*.model").split()
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in ATTRS).encode()
SHAPES = ("org/bert-formats", "org/st-variants", "org/sharded-consolidated", "org/pickle-only", "org/llama-gguf",
          "org/vision-gguf", "org/noq4-gguf")
# What a service loads from each repo with the defaults (PRELOADER_WEIGHTS=auto): the bench's reference.
LOADS = {
    "org/bert-formats": ("model.safetensors",),
    "org/st-variants": ("model.safetensors",),
    "org/sharded-consolidated": tuple(f"model-0000{n}-of-00003.safetensors" for n in (1, 2, 3)),
    "org/pickle-only": ("pytorch_model.bin",),
    "org/llama-gguf": ("Llama-3.2-1B-Instruct-Q4_K_M.gguf",),
    "org/vision-gguf": ("Q4_K_M/vision-Q4_K_M-00001-of-00002.gguf", "Q4_K_M/vision-Q4_K_M-00002-of-00002.gguf",
                        "mmproj-F16.gguf"),
    "org/noq4-gguf": ("model-Q8_0.gguf",),  # with the quantization named: Q8_0
}
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz",
         *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"), "the", "a", "cat", "dog", "sat", "on", "mat", "hello",
         "world", "model", "weights", ".", ",", "!", "?"]


def size(gb: float) -> int:
    return max(1, int(gb * SCALE))


def noise(seed: int, count: int) -> bytes:
    return np.random.default_rng(seed).bytes(count)


def _card(title: str) -> bytes:
    return f"---\nlicense: mit\n---\n# {title}\n\nA test repo shaped like a public one.\n".encode()


def tokenizer_files() -> dict[str, bytes]:
    """A WordPiece tokenizer transformers builds offline from vocab.txt."""
    config = {"do_lower_case": True, "model_max_length": 32, "tokenizer_class": "BertTokenizer",
              "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
              "mask_token": "[MASK]"}
    return {"vocab.txt": ("\n".join(VOCAB) + "\n").encode(),
            "tokenizer_config.json": json.dumps(config, indent=2).encode(),
            "special_tokens_map.json": json.dumps({k: config[k] for k in config if k.endswith("_token")}).encode()}


def bert(seed: int, layers: int, hidden: int) -> dict[str, bytes]:
    from .mirrors import bert_files  # mirrors calls this module: import at use

    return bert_files(seed, vocab_size=len(VOCAB), hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=2, intermediate_size=hidden * 2, max_position_embeddings=32)


def gguf_file(name: str, nbytes: int, seed: int, split: tuple[int, int] | None = None) -> bytes:
    """A GGUF file `gguf.GGUFReader` opens: metadata naming `name`, one tensor making up the size."""
    import gguf

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "f.gguf"
        writer = gguf.GGUFWriter(str(path), "llama")
        writer.add_name(name)
        if split is not None:
            writer.add_uint16("split.no", split[0])
            writer.add_uint16("split.count", split[1])
        count = max(32, (nbytes - 1024) // 32 * 32)
        writer.add_tensor("blob", np.frombuffer(noise(seed, count), dtype=np.uint8).copy(),
                          raw_dtype=gguf.GGMLQuantizationType.I8)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return path.read_bytes()


def bert_formats() -> dict[str, bytes]:
    """bert-base-uncased: 440 MB safetensors and bin, 536 MB h5, 438 MB msgpack, 534 MB ot, 532 MB onnx;
    the other formats keep the safetensors' ratio to it."""
    files = {**bert(10, 2, 32), **tokenizer_files(), "README.md": _card("bert-formats")}
    base = len(files["model.safetensors"]) / 440
    for seed, (path, mb) in enumerate((("pytorch_model.bin", 440), ("tf_model.h5", 536),
                                       ("flax_model.msgpack", 438), ("rust_model.ot", 534),
                                       ("model.onnx", 532), ("coreml/fill-mask/float32_model.mlpackage/Data/"
                                                             "com.apple.CoreML/weights/weight.bin", 532)), 11):
        files[path] = noise(seed, int(mb * base))
    return files


def st_variants() -> dict[str, bytes]:
    """all-MiniLM-L6-v2: 90.9 MB each of safetensors, bin, h5, ot; onnx/ with 90 MB and 23 MB variants
    (four of each kind), openvino/ with 90 MB and 23 MB ones; module folders and configs."""
    files = {**bert(20, 1, 16), **tokenizer_files(), "README.md": _card("st-variants")}
    base = len(files["model.safetensors"]) / 90.9
    files["modules.json"] = json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ], indent=2).encode()
    files["1_Pooling/config.json"] = json.dumps({"word_embedding_dimension": 16, "pooling_mode_mean_tokens": True,
                                                 "pooling_mode_cls_token": False,
                                                 "pooling_mode_max_tokens": False}).encode()
    files["sentence_bert_config.json"] = b'{"max_seq_length": 32, "do_lower_case": false}\n'
    files["config_sentence_transformers.json"] = b'{"__version__": {"sentence_transformers": "3.0.0"}}\n'
    others = [("pytorch_model.bin", 90.9), ("tf_model.h5", 91.0), ("rust_model.ot", 90.9),
              ("onnx/model.onnx", 90.4), ("onnx/model_O1.onnx", 90.4), ("onnx/model_O2.onnx", 90.3),
              ("onnx/model_O3.onnx", 90.3), ("onnx/model_O4.onnx", 45.2), ("onnx/model_qint8_arm64.onnx", 23.0),
              ("onnx/model_qint8_avx512.onnx", 23.0), ("onnx/model_qint8_avx512_vnni.onnx", 23.0),
              ("onnx/model_quint8_avx2.onnx", 23.0), ("openvino/openvino_model.bin", 90.3),
              ("openvino/openvino_model_qint8_quantized.bin", 22.9), ("openvino/openvino_model.xml", 0.21),
              ("openvino/openvino_model_qint8_quantized.xml", 0.37)]
    for seed, (path, mb) in enumerate(others, 21):
        files[path] = noise(seed, int(mb * base))
    return files


def sharded_consolidated() -> dict[str, bytes]:
    """Mistral-7B-Instruct-v0.3: shards of 4.95, 5.00 and 4.55 GB that model.safetensors.index.json names, and
    consolidated.safetensors (14.5 GB) holding the same weights under Mistral's own names."""
    rng = np.random.default_rng(30)
    shards, weight_map = {}, {}
    for n, gb in enumerate((4.95, 5.00, 4.55), 1):
        name = f"model-0000{n}-of-00003.safetensors"
        tensors = {f"model.layers.{n}.weight": rng.integers(0, 255, size(gb) - 256, dtype=np.uint8)}
        shards[name] = st_save(tensors, metadata={"format": "pt"})
        weight_map.update({key: name for key in tensors})
    whole = {k.replace("model.", ""): rng.integers(0, 255, size(gb) - 256, dtype=np.uint8)
             for k, gb in zip(weight_map, (4.95, 5.00, 4.55), strict=True)}
    total = sum(len(b) for b in shards.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    return {**shards, "consolidated.safetensors": st_save(whole, metadata={"format": "mistral"}),
            "model.safetensors.index.json": json.dumps(index, indent=2).encode(),
            "config.json": b'{"model_type": "mistral"}\n', "params.json": b'{"dim": 4096}\n',
            "tokenizer.json": b'{"version": "1.0"}\n', "tokenizer.model.v3": noise(31, size(0.000587)),
            "README.md": _card("sharded-consolidated")}


def pickle_only() -> dict[str, bytes]:
    """An older checkpoint: pytorch_model.bin (548 MB) and tf_model.h5 (498 MB), no safetensors."""
    return {"pytorch_model.bin": noise(40, size(0.548)), "tf_model.h5": noise(41, size(0.498)),
            "config.json": b'{"model_type": "gpt2"}\n', "README.md": _card("pickle-only")}


def llama_gguf() -> dict[str, bytes]:
    """Llama-3.2-1B-Instruct-GGUF: seven quantizations from Q2_K (581 MB) to f16 (2.48 GB)."""
    files = {"README.md": _card("llama-gguf")}
    quants = (("Q2_K", 0.581), ("Q3_K_M", 0.691), ("Q4_K_M", 0.808), ("Q5_K_M", 0.912), ("Q6_K", 1.02),
              ("Q8_0", 1.32), ("f16", 2.48))
    for seed, (quant, gb) in enumerate(quants, 50):
        files[f"Llama-3.2-1B-Instruct-{quant}.gguf"] = gguf_file(f"llama-{quant}", size(gb), seed)
    return files


def vision_gguf() -> dict[str, bytes]:
    """unsloth's layout for a vision model: big quantizations split in folders (Q4_K_M 2.5 GB, Q8_0 4.1 GB,
    BF16 7.7 GB in two parts each), one unsplit Q2_K, projectors of 0.85 (F16, BF16) and 1.7 GB (F32)."""
    files = {"README.md": _card("vision-gguf"), "params": b'{"vision": true}\n'}
    seed = 60
    for quant, gb in (("Q4_K_M", 2.5), ("Q8_0", 4.1), ("BF16", 7.7)):
        for part in (1, 2):
            files[f"{quant}/vision-{quant}-0000{part}-of-00002.gguf"] = gguf_file(f"vision-{quant}", size(gb / 2),
                                                                                  seed, (part - 1, 2))
            seed += 1
    files["vision-Q2_K.gguf"] = gguf_file("vision-Q2_K", size(1.2), seed)
    for name, gb in (("mmproj-F16.gguf", 0.85), ("mmproj-BF16.gguf", 0.85), ("mmproj-F32.gguf", 1.7)):
        seed += 1
        files[name] = gguf_file(name, size(gb), seed)
    return files


def noq4_gguf() -> dict[str, bytes]:
    """Quantizations without Q4_K_M (Q5_K_M 5.1 GB, Q8_0 7.7 GB): a default run must be told which."""
    return {"README.md": _card("noq4-gguf"), "model-Q5_K_M.gguf": gguf_file("q5", size(5.1), 70),
            "model-Q8_0.gguf": gguf_file("q8", size(7.7), 71)}


BUILDERS = {"org/bert-formats": bert_formats, "org/st-variants": st_variants,
            "org/sharded-consolidated": sharded_consolidated, "org/pickle-only": pickle_only,
            "org/llama-gguf": llama_gguf, "org/vision-gguf": vision_gguf, "org/noq4-gguf": noq4_gguf}


def add_shapes(mirrors, lfs: bool) -> None:
    """Add the shaped repos to `mirrors` (called once by build_mirrors)."""
    from .mirrors import _Repo

    for tick, (repo_id, build) in enumerate(BUILDERS.items()):
        repo = _Repo(mirrors, "model", repo_id, lfs)
        repo.write({".gitattributes": GITATTRIBUTES, **build()})
        repo.commit(f"{repo_id}: shaped like its public model", tick)
    # A branch named like a quantization: it wins over the quantization of that name.
    repo = _Repo(mirrors, "model", "org/branchy-gguf", lfs)
    repo.write({".gitattributes": GITATTRIBUTES, "README.md": _card("branchy-gguf"),
                "m-Q4_K_M.gguf": gguf_file("main-q4", size(0.5), 80), "m-Q8_0.gguf": gguf_file("main-q8", size(1), 81)})
    repo.commit("main", 0)
    repo.checkout("Q8_0", new=True)
    repo.write({"m-Q8_0.gguf": None, "branch.txt": b"the Q8_0 branch\n"})
    repo.commit("a branch named Q8_0", 60)
    repo.checkout("main")
