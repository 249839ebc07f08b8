"""Repos for the lock file and the pickle policy (tests/test_lockfile*.py, tests/test_pickle*.py).

    <root>/mirrors/models/org/locked-model    main moves on when a test calls `advance`
    <root>/mirrors/models/org/pickle-model    only pickle weights: pytorch_model.bin, torch.save's zip format
    <root>/mirrors/models/org/hidden-pickle   a pickle under a name of its own (weights.data), and safetensors

Only those tests use them: `advance` changes org/locked-model's main for the rest of the session.
"""

from __future__ import annotations

import io
import pickle
import zipfile

from localhub.mirrors import GITATTRIBUTES, Mirrors, _card, _Repo, bert_files

LOCKED = "org/locked-model"
PICKLED = "org/pickle-model"
HIDDEN = "org/hidden-pickle"


def torch_zip(payload: object) -> bytes:
    """A file in torch.save's format (torch >= 1.6): a zip whose `archive/data.pkl` is a pickle."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in (("archive/data.pkl", pickle.dumps(payload, protocol=2)), ("archive/version", b"3\n")):
            archive.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data)  # same bytes every build
    return buffer.getvalue()


def add_locked_repos(m: Mirrors, lfs: bool) -> None:
    attrs = {".gitattributes": GITATTRIBUTES}
    r = _Repo(m, "model", LOCKED, lfs)
    r.write({**attrs, "README.md": _card("locked-model", "Locked, then moved on."), **bert_files(7)})
    r.commit("initial locked model", 0)

    r = _Repo(m, "model", PICKLED, lfs)
    r.write({**attrs, "README.md": _card("pickle-model", "Pickle weights only."),
             "config.json": b'{"model_type": "bert"}\n',
             "pytorch_model.bin": torch_zip({"weight": list(range(64))}) + bytes(8192)})
    r.commit("pickle weights", 0)

    r = _Repo(m, "model", HIDDEN, lfs)
    r.write({**attrs, "README.md": _card("hidden-pickle", "A pickle under another name."), **bert_files(8),
             "weights.data": pickle.dumps({"weight": list(range(64))}, protocol=4)})
    r.commit("weights under another name", 0)


def advance(m: Mirrors, lfs: bool = True) -> str:
    """Commit a change to org/locked-model's main, as an upload after a lock was written would; its new sha."""
    r = _Repo.__new__(_Repo)
    r.m, r.type, r.id, r.lfs = m, "model", LOCKED, lfs
    r.path = m.repo_path("model", LOCKED)
    r.state = dict(m.files("model", LOCKED, "main"))
    moves = sum(1 for key in m.contents if key[:2] == ("model", LOCKED))
    r.write({"README.md": _card("locked-model", f"Moved on {moves} time(s)."), **bert_files(7 + moves)})
    return r.commit(f"move on ({moves})", 60 * moves)
