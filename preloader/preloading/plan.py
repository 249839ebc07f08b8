"""The resolved plan, as `preloader plan` prints it: computed from settings alone, no network, no writes.

What `weights=auto` skips comes from the completion record's listing of the commit the cache holds for
the revision; with none, the plan says so rather than ask the hub (docs/weights.md).
"""

from __future__ import annotations

from ..cache import records
from ..cache.selection import EVERYTHING
from ..config import Settings
from ..errors import PreloaderError
from ..spec import RepoSpec
from .handoff import manifest_path


def weights(settings: Settings, spec: RepoSpec) -> dict:
    """The spec's selection, and what it skips of the cached listing (None when no listing is cached)."""
    local = spec.as_quant() if spec.names_quant and not settings.layout.ref_file(spec).exists() else spec
    selection = settings.selection(local)
    out = {**selection.label(), "known": False, "commit": None, "files": None, "bytes": None,
           "skipped": None, "skipped_bytes": None}
    state = records.check(settings.layout, local, selection=EVERYTHING)
    if state.record is None:
        out["why"] = ("no completion record for this revision in the cache, and plan asks no hub: "
                      "`preloader run` (or `pull`) lists it")
        return out
    try:
        choice = selection.choose(state.record.listing,
                                  records.indexes_of(settings.layout, local, state.commit, state.record, selection))
    except PreloaderError as error:
        out.update(commit=state.commit, why=str(error))
        return out
    out.update(known=True, commit=state.commit, quant=choice.quant or selection.quant, files=len(choice.wanted),
               bytes=sum(choice.wanted.values()), skipped=sorted(choice.skipped),
               skipped_bytes=sum(choice.skipped.values()))
    return out


def describe(settings: Settings, command: list[str]) -> dict:
    layout = settings.layout
    repos = []
    for spec in settings.repos:
        alias = layout.alias_link(spec)
        repos.append({
            "type": spec.repo_type,
            "repo": spec.repo_id,
            "revision": spec.revision,
            "pinned": spec.is_commit,
            "repo_dir": str(layout.repo_dir(spec)),
            "latest": str(layout.latest_link(spec)) if layout.latest_link(spec) else None,
            "alias": str(alias) if alias else None,
            "weights": weights(settings, spec),
        })
    return {
        "repos": repos,
        "cache_dir": str(settings.cache_dir),
        "cache_dir_source": settings.cache_dir_source,
        "state_dir": str(settings.state_dir),
        "link_root": str(settings.link_root) if settings.link_root else None,
        "endpoint": settings.endpoint,
        "offline": settings.offline,
        "weights": settings.weights,
        "gguf_quant": settings.gguf_quant,
        "include": list(settings.include),
        "exclude": list(settings.exclude),
        "timeout": settings.timeout,
        "lock_timeout": settings.lock_timeout,
        "retries": settings.retries,
        "user": settings.user,
        "token": "set" if settings.token else "unset",
        "token_source": settings.token_source,
        "warm": {"mode": str(settings.warm), "lock": settings.warm_lock, "dtype": settings.dtype},
        "require_repos": settings.require_repos,
        "service": {
            "command": command,
            "hf_hub_offline": settings.service_offline,
            "export_token": settings.export_token,
            "manifest": str(manifest_path(settings)),
        },
    }
