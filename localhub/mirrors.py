"""Deterministic local git repos that olah serves as Hugging Face mirrors.

Layout (what olah's ``mirrors-path`` expects)::

    <root>/mirrors/models/org/tiny-model
    <root>/mirrors/models/org/second-model
    <root>/mirrors/models/org/tiny-model-fork
    <root>/mirrors/models/org/big-model
    <root>/mirrors/datasets/org/tiny-data

Weights are real BERT checkpoints (loadable with ``transformers.BertModel``)
but generated with numpy, so building needs no torch import and the bytes, and
therefore every commit sha, are identical on every machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.numpy import save as _st_save

from .signed import build_signed

# Fixed identity and clock: same content -> same commit shas everywhere.
_BASE_EPOCH = 1_700_000_000
_GIT_ENV = {
    "GIT_AUTHOR_NAME": "localhub",
    "GIT_AUTHOR_EMAIL": "localhub@example.invalid",
    "GIT_COMMITTER_NAME": "localhub",
    "GIT_COMMITTER_EMAIL": "localhub@example.invalid",
    # Ignore whatever global/system git config the machine has.
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
}
# As the public hub's default .gitattributes (and *.gguf) store them; the first repos hold only the first two.
_LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".h5", ".msgpack", ".onnx", ".ot", ".pt", ".pth", ".ckpt", ".pkl",
                 ".tflite", ".mlmodel", ".model", ".model.v3")
GITATTRIBUTES = b"*.bin filter=lfs diff=lfs merge=lfs -text\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n"

RepoKey = tuple[str, str, str]  # (repo_type, repo_id, revision)


@dataclass
class Mirrors:
    """What :func:`build_mirrors` made: paths, commit shas and file contents."""

    root: Path
    commits: dict[RepoKey, str] = field(default_factory=dict)
    # (repo_type, repo_id, sha) -> {path: bytes as served, i.e. LFS resolved}
    contents: dict[RepoKey, dict[str, bytes]] = field(default_factory=dict)

    @property
    def mirrors_dir(self) -> Path:
        """The directory to hand to olah as ``mirrors-path``."""
        return self.root / "mirrors"

    def repo_path(self, repo_type: str, repo_id: str) -> Path:
        return self.mirrors_dir / f"{repo_type}s" / repo_id

    def sha(self, repo_type: str, repo_id: str, revision: str) -> str:
        """Commit sha of a branch, tag or (known) commit sha."""
        return self.commits[(repo_type, repo_id, revision)]

    def files(self, repo_type: str, repo_id: str, revision: str) -> dict[str, bytes]:
        """``{path: content}`` of the repo at ``revision`` (as the hub serves it)."""
        return self.contents[(repo_type, repo_id, self.sha(repo_type, repo_id, revision))]

    def filenames(self, repo_type: str, repo_id: str, revision: str) -> list[str]:
        return sorted(self.files(repo_type, repo_id, revision))

    def distinct(self, *keys: RepoKey) -> dict[str, int]:
        """{content hash: size} of the files of these (type, repo, revision)s, each content once: what a
        preload of them all downloads, identical files of several repos being fetched once."""
        return {hashlib.sha256(data).hexdigest(): len(data)
                for key in keys for data in self.files(*key).values()}


class _Repo:
    """A tiny git driver that keeps the served content of every commit."""

    def __init__(self, mirrors: Mirrors, repo_type: str, repo_id: str, lfs: bool):
        self.m, self.type, self.id, self.lfs = mirrors, repo_type, repo_id, lfs
        self.path = mirrors.repo_path(repo_type, repo_id)
        self.path.mkdir(parents=True)
        self.state: dict[str, bytes] = {}
        self._git("init", "-q", "-b", "main")

    def _git(self, *args: str, tick: int = 0) -> str:
        stamp = f"@{_BASE_EPOCH + tick} +0000"
        env = {**os.environ, **_GIT_ENV, "GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp}
        out = subprocess.run(
            ["git", "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false", *args],
            cwd=self.path,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()

    def write(self, files: dict[str, bytes | None]) -> None:
        """Stage files; ``None`` deletes. LFS-suffixed files become pointers."""
        for name, data in files.items():
            target = self.path / name
            if data is None:
                target.unlink()
                self.state.pop(name, None)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            self.state[name] = data
            if self.lfs and name.endswith(_LFS_SUFFIXES):
                data = self._store_lfs(data)
            target.write_bytes(data)

    def _store_lfs(self, data: bytes) -> bytes:
        # olah reads LFS objects from .git/lfs/objects itself; git-lfs not needed.
        oid = hashlib.sha256(data).hexdigest()
        obj = self.path / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
        obj.parent.mkdir(parents=True, exist_ok=True)
        obj.write_bytes(data)
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(data)}\n".encode()

    def commit(self, message: str, tick: int) -> str:
        """Commit everything; record the sha under itself and the current branch."""
        self._git("add", "-A")
        self._git("commit", "-q", "--allow-empty", "-m", message, tick=tick)
        sha = self._git("rev-parse", "HEAD")
        branch = self._git("rev-parse", "--abbrev-ref", "HEAD")
        for ref in (branch, sha):
            self.m.commits[(self.type, self.id, ref)] = sha
        self.m.contents[(self.type, self.id, sha)] = dict(self.state)
        return sha

    def tag(self, name: str) -> None:
        self._git("tag", name)
        self.m.commits[(self.type, self.id, name)] = self._git("rev-parse", "HEAD")

    def checkout(self, branch: str, new: bool = False) -> None:
        self._git("checkout", "-q", *(["-b"] if new else []), branch)
        sha = self._git("rev-parse", "HEAD")
        self.state = dict(self.m.contents[(self.type, self.id, sha)])


def bert_files(
    seed: int,
    *,
    vocab_size: int = 64,
    hidden_size: int = 16,
    num_hidden_layers: int = 1,
    num_attention_heads: int = 2,
    intermediate_size: int = 32,
    max_position_embeddings: int = 32,
) -> dict[str, bytes]:
    """``config.json`` + ``model.safetensors`` of a randomly initialised BertModel."""
    config = {
        "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.1,
        "dtype": "float32",
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": intermediate_size,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": max_position_embeddings,
        "model_type": "bert",
        "num_attention_heads": num_attention_heads,
        "num_hidden_layers": num_hidden_layers,
        "pad_token_id": 0,
        "type_vocab_size": 2,
        "vocab_size": vocab_size,
    }
    rng = np.random.default_rng(seed)
    h, i = hidden_size, intermediate_size
    t: dict[str, np.ndarray] = {}

    def linear(name: str, out_dim: int, in_dim: int) -> None:
        t[f"{name}.weight"] = rng.normal(0, 0.02, (out_dim, in_dim)).astype(np.float32)
        t[f"{name}.bias"] = np.zeros(out_dim, np.float32)

    def norm(name: str) -> None:
        t[f"{name}.weight"] = np.ones(h, np.float32)
        t[f"{name}.bias"] = np.zeros(h, np.float32)

    for name, rows in (("word", vocab_size), ("position", max_position_embeddings), ("token_type", 2)):
        t[f"embeddings.{name}_embeddings.weight"] = rng.normal(0, 0.02, (rows, h)).astype(np.float32)
    norm("embeddings.LayerNorm")
    for n in range(num_hidden_layers):
        p = f"encoder.layer.{n}"
        for proj in ("query", "key", "value"):
            linear(f"{p}.attention.self.{proj}", h, h)
        linear(f"{p}.attention.output.dense", h, h)
        norm(f"{p}.attention.output.LayerNorm")
        linear(f"{p}.intermediate.dense", i, h)
        linear(f"{p}.output.dense", h, i)
        norm(f"{p}.output.LayerNorm")
    linear("pooler.dense", h, h)
    return {
        "config.json": (json.dumps(config, indent=2, sort_keys=True) + "\n").encode(),
        "model.safetensors": _st_save(t, metadata={"format": "pt"}),
    }


def _card(title: str, body: str, meta: str = "license: mit") -> bytes:
    return f"---\n{meta}\n---\n# {title}\n\n{body}\n".encode()


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()


def build_mirrors(root: Path, *, lfs: bool = True) -> Mirrors:
    """Create the mirror repos under ``root/mirrors`` (must not exist yet).

    ``*.safetensors``/``*.bin`` are stored as git-LFS pointers (as on the Hub,
    so their ETag is the sha256 of the content) unless ``lfs=False``, in which
    case they are plain blobs and the ETag is the git blob id.
    """
    m = Mirrors(root=Path(root))
    if m.mirrors_dir.exists():
        raise FileExistsError(m.mirrors_dir)
    attrs = {".gitattributes": GITATTRIBUTES}

    # org/tiny-model: v1.0 == first commit; dev has 2 layers; main moved on.
    r = _Repo(m, "model", "org/tiny-model", lfs)
    r.write({**attrs, "README.md": _card("tiny-model", "A tiny BERT for tests."), **bert_files(0)})
    r.commit("initial tiny model", 0)
    r.tag("v1.0")
    r.checkout("dev", new=True)
    r.write(bert_files(0, num_hidden_layers=2))
    r.commit("two layers", 60)
    r.checkout("main")
    r.write({"README.md": _card("tiny-model", "A tiny BERT for tests.\n\nUpdated after v1.0.")})
    r.commit("update readme", 120)

    # org/second-model: a subfolder and a *.bin for include/exclude patterns;
    # weights of a few hundred KiB so partial transfers are meaningful.
    r = _Repo(m, "model", "org/second-model", lfs)
    r.write(
        {
            **attrs,
            "README.md": _card("second-model", "Second test model."),
            **bert_files(
                1,
                vocab_size=1024,
                hidden_size=64,
                num_attention_heads=4,
                intermediate_size=128,
                max_position_embeddings=64,
            ),
            # Not a loadable torch checkpoint: only here to be matched by "*.bin".
            "pytorch_model.bin": np.random.default_rng(2).bytes(4096),
            "sub/extra.txt": b"extra file in a subfolder\n",
        }
    )
    r.commit("initial second model", 0)

    # org/tiny-model-fork: a re-upload of tiny-model's weights under another name (as forks and mirrors
    # do): its model.safetensors and config.json are byte for byte tiny-model's main.
    r = _Repo(m, "model", "org/tiny-model-fork", lfs)
    r.write({**attrs, "README.md": _card("tiny-model-fork", "The same weights, re-uploaded."), **bert_files(0)})
    r.commit("fork of tiny model", 0)

    # org/big-model: one 12 MiB LFS file, big enough for several 1 MiB ranges, so resume and
    # multi-connection transfers can be seen; plus a small config.
    r = _Repo(m, "model", "org/big-model", lfs)
    r.write({**attrs, "config.json": b'{"model_type": "blob"}\n',
             "model.safetensors": np.random.default_rng(3).bytes(12 * 1024 * 1024)})
    r.commit("big weights", 0)

    # org/tiny-data: v1.0 == first commit; main changes train; dev changes test.
    r = _Repo(m, "dataset", "org/tiny-data", lfs)
    rows = [{"id": n, "text": f"example {n}", "label": n % 2} for n in range(8)]
    r.write(
        {
            **attrs,
            "README.md": _card("tiny-data", "A tiny dataset.", "license: mit\npretty_name: tiny-data"),
            "data/train.jsonl": _jsonl(rows[:6]),
            "data/test.jsonl": _jsonl(rows[6:]),
        }
    )
    r.commit("initial data", 0)
    r.tag("v1.0")
    r.checkout("dev", new=True)
    r.write({"data/test.jsonl": _jsonl(rows[5:])})
    r.commit("bigger test split", 60)
    r.checkout("main")
    r.write({"data/train.jsonl": _jsonl(rows[:6] + [{"id": 99, "text": "new", "label": 1}])})
    r.commit("more training data", 120)
    # The repos of later features, each from its own module; deferred imports, since they build on this one.
    from .locked import add_locked_repos
    from .room import build_room
    from .shapes import add_shapes

    build_signed(m, _Repo, lfs, attrs, bert_files, _card)  # the signature tests' repos
    add_locked_repos(m, lfs)  # the lock file's and the pickle policy's repos
    build_room(m, _Repo, attrs, lfs)  # the node-cache tests' models
    add_shapes(m, lfs)  # repos shaped like public ones (weights=auto)
    return m
