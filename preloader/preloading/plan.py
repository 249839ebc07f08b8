"""The resolved plan, as `preloader plan` prints it: computed from settings alone, no network, no writes."""

from __future__ import annotations

from ..config import Settings
from .handoff import manifest_path


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
        })
    return {
        "repos": repos,
        "cache_dir": str(settings.cache_dir),
        "cache_dir_source": settings.cache_dir_source,
        "state_dir": str(settings.state_dir),
        "link_root": str(settings.link_root) if settings.link_root else None,
        "endpoint": settings.endpoint,
        "offline": settings.offline,
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
