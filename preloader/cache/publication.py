"""Publishing a snapshot: the one sequence the engine, `verify --repair`, `import` and read-only tiers follow.

Once every wanted file is on disk, checked: our completion record (what is complete, and the commit's whole
listing), huggingface_hub's tree listing (`trees/<commit>.json`, which its own readers trust to tell a
complete snapshot from a partial one), then what names the snapshot: refs, the alias link, last use, and
`latest`. Each step is an atomic rename, so a reader sees a snapshot named only once it is complete.

Names are `DispensableWrites` where a start can do without them (a read-only cache in front of a complete
snapshot): skipped with one warning, never a failure. Records and listings are not: a snapshot that cannot
be recorded is not published.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..spec import RepoSpec
from . import atomic, records, trees
from .layout import Layout
from .records import Record


def publish(layout: Layout, spec: RepoSpec, commit: str, *, record: Record | None = None,
            tree: Mapping[str, dict] | None = None, refs: Iterable[str] = (), alias: bool = False,
            used: bool = False, writes: atomic.DispensableWrites | None = None) -> None:
    """Publish `commit` of `spec`'s repo: `record` (our completion record), `tree` (huggingface_hub's entries:
    path -> size, blob_id, lfs...; written unless a listing is there), each of `refs` pointed at it, the alias
    link (`alias`, where the layout has a link root) and last use (`used`). The caller holds the repo lock and
    has checked the files; `writes` makes refs, alias and last use skippable on a read-only cache."""
    if record is not None:
        records.write(layout, spec, record)
    if tree:
        trees.write(layout, spec, commit, tree)
    write = writes.write if writes is not None else _write
    for ref in refs:
        if records.local_commit(layout, RepoSpec(spec.repo_type, spec.repo_id, ref)) != commit:
            write(f"refs/{ref}", atomic.write_text, layout.ref_file(spec, ref), commit, root=layout.cache_dir)
    link = layout.alias_link(spec) if alias else None
    if link is not None:
        target = atomic.relative_target(layout.snapshot_dir(spec, commit), link)
        write("the alias link", atomic.symlink, target, link, root=layout.link_root)
    if used:
        write("last use", records.mark_used, layout, spec, commit)


def link_latest(layout: Layout, spec: RepoSpec, commit: str, writes: atomic.DispensableWrites | None = None) -> None:
    """Point the repo's `latest` at `commit` where the layout places it; a link an earlier placement left
    elsewhere goes."""
    write = writes.write if writes is not None else _write
    for place, link in layout.latest_links(spec).items():
        if place == layout.latest:
            write("the `latest` link", atomic.symlink, layout.latest_target(spec, commit), link, root=layout.cache_dir)
        elif link.is_symlink():
            write("the `latest` link", atomic.remove, link, layout.roots)


def _write(what: str, action, *args, **kwargs) -> bool:
    action(*args, **kwargs)
    return True
