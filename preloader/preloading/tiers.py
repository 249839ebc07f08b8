"""Read-only tiers (PRELOADER_READ_CACHES): hub caches used where they are, never written.

A platform's cached-models volume (RunPod's `/runpod-volume/huggingface-cache/hub`), the models baked into
an image, a shared read-only mount. A snapshot complete in a tier (by our completion record, or by
huggingface_hub's own tree listing for a cache only it wrote) is not downloaded or copied: the writable
cache gets links to the tier's files, so the service still sees one HF_HUB_CACHE. With no writable cache,
the service is started on the tier itself.
"""

from __future__ import annotations

import logging
import os

from ..cache import atomic, publication, records, trees
from ..cache.layout import Layout
from ..cache.records import Completeness, Record
from ..config import Settings
from ..logs import event
from ..spec import RepoSpec

logger = logging.getLogger(__name__)


class Tiers:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.layouts = [Layout.build(path) for path in settings.read_caches]

    def find(self, spec: RepoSpec, commit: str | None = None) -> tuple[Layout, Completeness] | None:
        """The first tier where the request (at `commit`, or what the tier's refs say) is complete."""
        s = self.settings
        for tier in self.layouts:
            args = (commit,) if commit else ()
            # Read where it is, never written or deleted in: a tier may well be a farm of links to other mounts.
            state = records.check(tier, spec, *args, selection=s.selection(spec), trust_tree=True,
                                  contained=False)
            if state.complete and _linked_blobs(tier, state) is not None:
                return tier, state
        return None

    def link(self, tier: Layout, state: Completeness, layout: Layout) -> Completeness:
        """Make the tier's snapshot appear in the writable cache: `blobs/<etag>` links to the tier's files,
        the snapshot's links to those, and our record; the writable cache's state of it."""
        spec, commit = RepoSpec(state.spec.repo_type, state.spec.repo_id), state.commit
        for path, (etag, real) in _linked_blobs(tier, state).items():
            blob = layout.blob(spec, etag)
            if not blob.exists():
                atomic.symlink(real, blob, root=layout.cache_dir)  # absolute: the tier is mounted elsewhere
            link = layout.snapshot_dir(spec, commit) / path
            atomic.symlink(atomic.relative_target(blob, link), link, root=layout.cache_dir)
        # The tier's tree listing too, where it has one: huggingface_hub's readers of this cache trust it.
        publication.publish(layout, spec, commit, record=Record(commit, dict(state.record.listing),
                                                                dict(state.wanted)),
                            tree=trees.read(tier, spec, commit))
        event(logger, "tier.linked", repo=spec.repo_id, rev=state.spec.revision, commit=commit,
              tier=tier.cache_dir, files=len(state.wanted))
        s = self.settings
        return records.check(layout, state.spec, commit, selection=s.selection(state.spec))


def _linked_blobs(tier: Layout, state: Completeness) -> dict[str, tuple[str, str]] | None:
    """{file: (etag, the tier file's real path)} for the wanted files, or None where the tier's snapshot is
    not the hub layout (files that are not links to `blobs/<etag>`)."""
    from ..cache.inventory import snapshot_blobs  # only with tiers: every start imports this module

    spec = RepoSpec(state.spec.repo_type, state.spec.repo_id)
    snapshot = tier.snapshot_dir(spec, state.commit)
    blobs = snapshot_blobs(snapshot)
    found = {}
    for path in state.wanted:
        blob = blobs.get(path)
        if blob is None or blob.parent.name != "blobs":
            return None
        found[path] = (blob.name, os.path.realpath(snapshot / path))
    return found

