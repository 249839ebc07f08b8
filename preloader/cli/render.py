"""How results look: the stable JSON documents of `--json`, and human tables.

Each JSON document carries `"schema": "preloader.<command>/1"`; the schemas are
in docs/schemas/ and a test validates real output against them.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import TYPE_CHECKING

from ..units import human_size

if TYPE_CHECKING:  # the types only: doctor's probes and the cache API load when their command runs
    from ..cache.manage import CacheInfo, DedupReport, RemovalReport, SnapshotCheck, SnapshotStatus
    from ..doctor import Check


def _iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def ls_json(info: CacheInfo) -> dict:
    return {
        "schema": "preloader.ls/1",
        "cache_dir": str(info.cache_dir),
        "state_dir": str(info.state_dir),
        "repos": [
            {
                "type": repo.repo_type,
                "repo": repo.repo_id,
                "path": str(repo.path),
                "size": repo.size,
                "last_used": _iso(repo.last_used),
                "latest": repo.latest,
                "revisions": [
                    {
                        "commit": rev.commit,
                        "refs": rev.refs,
                        "state": rev.state,
                        "recorded": rev.recorded,
                        "files": rev.files,
                        "size": rev.size,
                        "last_used": _iso(rev.last_used),
                        "latest": rev.latest,
                        "aliases": rev.aliases,
                        "path": str(rev.path),
                    }
                    for rev in repo.revisions
                ],
            }
            for repo in info.repos
        ],
        "totals": {"repos": len(info.repos), "size": info.size, "shared": info.shared, "free": info.free},
    }


def ls_text(info: CacheInfo) -> str:
    return table(ls_table(info)) + "\n" + ls_footer(info)


def ls_table(info: CacheInfo) -> list[list[str]]:
    rows = [["TYPE", "REPO", "COMMIT", "REFS", "STATE", "SIZE", "LAST USED", "LINKS"]]
    for repo in info.repos:
        for rev in repo.revisions:
            links = (["latest"] if rev.latest else []) + [f"alias:{a.rsplit('/', 1)[-1]}" for a in rev.aliases]
            rows.append([repo.repo_type, repo.repo_id, rev.commit[:12], ",".join(rev.refs) or "-", rev.state,
                         human_size(rev.size), _iso(rev.last_used) or "-", ",".join(links) or "-"])
    return rows


def ls_footer(info: CacheInfo) -> str:
    return (f"{len(info.repos)} repos, {human_size(info.size)} on disk (each file once; "
            f"{human_size(info.shared)} of it shared by several repos), "
            f"{human_size(info.free)} free in {info.cache_dir}")


def status_json(items: list[SnapshotStatus]) -> dict:
    return {"schema": "preloader.status/1", "ready": all(i.complete for i in items),
            "repos": [asdict(i) for i in items]}


def status_text(items: list[SnapshotStatus]) -> str:
    return "\n".join(f"{'ready' if i.complete else 'NOT READY'}  {i.path or '-'}  {i.message}" for i in items)


def verify_text(checks: list[SnapshotCheck]) -> str:
    lines = []
    for c in checks:
        detail = "; ".join(f"{kind}: {', '.join(files)}" for kind, files in
                           (("missing", c.missing), ("truncated", c.truncated), ("corrupt", c.corrupt),
                            ("repaired", c.repaired)) if files)
        if c.unsafe is not None:
            detail = f"not checked: {c.unsafe}"
        lines.append(f"{'ok' if c.ok else 'BROKEN'}  {c.repo_type} {c.repo_id}@{c.commit[:12]}  "
                     f"{c.checked} files checked  {detail}".rstrip())
    return "\n".join(lines)


def removal_text(report: RemovalReport) -> str:
    would = report.dry_run
    lines = [f"{'would remove' if would else 'removed'}  {r.repo_type} {r.repo_id}@{r.commit[:12]}  "
             f"{human_size(r.size)}  {r.reason}" for r in report.removed]
    lines += [f"{'would remove' if would else 'removed'} leftover  {path}" for path in report.leftovers]
    lines += [f"skipped  {line}" for line in report.skipped]
    return "\n".join(lines + [f"{'would free' if would else 'freed'} {human_size(report.freed)}"])


def doctor_text(checks: list[Check]) -> str:
    lines = []
    for c in checks:
        lines.append(f"{c.status:<5} {c.name}: {c.detail}")
        if c.fix and c.status != "ok":
            lines.append(f"      fix: {c.fix}")
    return "\n".join(lines)


def verify_json(checks: list[SnapshotCheck]) -> dict:
    return {
        "schema": "preloader.verify/1",
        "ok": all(c.ok for c in checks),
        "snapshots": [dict(asdict(c), ok=c.ok, broken=c.broken) for c in checks],
    }


def removal_json(report: RemovalReport, command: str) -> dict:
    return {
        "schema": f"preloader.{command}/1",
        "dry_run": report.dry_run,
        "removed": [dict(asdict(r), last_used=_iso(r.last_used)) for r in report.removed],
        "skipped": report.skipped,
        "leftovers": report.leftovers,
        "freed": report.freed,
    }


def dedup_json(report: DedupReport) -> dict:
    return {"schema": "preloader.dedup/1", "dry_run": report.dry_run, "linked": report.linked,
            "skipped": report.skipped, "saved": report.saved}


def dedup_text(report: DedupReport) -> str:
    verb = "would link" if report.dry_run else "linked"
    lines = [f"{verb}  {etag[:12]}  {len(paths)} copies: {', '.join(paths)}" for etag, paths in report.linked.items()]
    lines += [f"skipped  {line}" for line in report.skipped]
    return "\n".join(lines + [f"{'would save' if report.dry_run else 'saved'} {human_size(report.saved)}"])


def import_json(report) -> dict:
    return {"schema": "preloader.import/1", "snapshots": report.snapshots, "blobs_written": report.blobs_written,
            "blobs_present": report.blobs_present, "bytes_written": report.bytes_written}


def import_text(report) -> str:
    lines = [f"imported  {name}" for name in report.snapshots]
    return "\n".join(lines + [f"{report.blobs_written} blobs written ({human_size(report.bytes_written)}), "
                              f"{report.blobs_present} already in the cache"])


def doctor_json(checks: list[Check]) -> dict:
    return {"schema": "preloader.doctor/1", "ok": all(c.status != "fail" for c in checks),
            "checks": [asdict(c) for c in checks]}


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)
