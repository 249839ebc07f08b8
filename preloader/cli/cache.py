"""Managing the cache volume: ls, status, verify, rm, prune, doctor. Each command: settings, one library
call, output."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from .. import cache, logs
from ..cache import archive
from ..cache.locks import RepoLocks
from ..errors import DiskError, OutputClosedError, os_error
from ..spec import parse_removals, parse_specs
from ..units import human_size
from . import render
from .base import (
    CACHE_SETTINGS,
    DURATION,
    HUB_SETTINGS,
    SIZE,
    emit,
    fail,
    json_option,
    load_settings,
    parse_spec_args,
    reports_errors,
    settings_options,
    silence_stdout,
    spec_arguments,
)

logger = logging.getLogger("preloader.cli")

LOCK_SETTINGS = ("lock", "lease_stale")
# The repos come from the env vars: --dataset means "the SPECs are datasets".
REPO_SETTINGS = ("weights", "gguf_quant", "include", "exclude")


def locking(settings) -> RepoLocks:
    return RepoLocks.auto(settings.layout, settings.lock, settings.lease_stale)


@click.command(name="ls")
@settings_options(names=CACHE_SETTINGS)
@json_option
@reports_errors
def ls_command(as_json, **flags):
    """List every repo in the cache: revisions, refs, complete or partial, links, size, last use."""
    info = cache.list_cache(load_settings(flags).layout)
    emit(as_json, render.ls_json(info), render.ls_text(info))


@click.command()
@settings_options(names=CACHE_SETTINGS + REPO_SETTINGS)
@spec_arguments
@json_option
@reports_errors
def status(specs, datasets_only, as_json, **flags):
    """Is each SPEC (user/name[:revision]) complete in the cache? Exit 0 only when all are.

    With no SPEC, checks the repos RUNPOD_HUGGINGFACE_MODEL / _DATASET name, with
    PRELOADER_INCLUDE / _EXCLUDE (or --include / --exclude); exit 1 when none is
    named. --dataset: the SPECs are datasets. No network. For readiness probes:
    `preloader status && start`.
    """
    s = load_settings(flags)
    repos = parse_spec_args(specs, datasets_only) if specs else s.repos
    if not repos:
        fail("no repos to check: give SPECs or set RUNPOD_HUGGINGFACE_MODEL / RUNPOD_HUGGINGFACE_DATASET", 1, flags)
    items = cache.status(s.layout, repos, s.selection)
    emit(as_json, render.status_json(items), render.status_text(items))
    sys.exit(0 if all(i.complete for i in items) else 1)


SIGNATURE_SETTINGS = ("signature_key", "signature_cert", "signature_identity", "signature_issuer", "signature_file",
                      "offline")


@click.command()
@settings_options(names=CACHE_SETTINGS + HUB_SETTINGS + LOCK_SETTINGS + SIGNATURE_SETTINGS)
@spec_arguments
@click.option("--repair", is_flag=True, help="Re-fetch only the missing, truncated or corrupt files.")
@click.option("--signature", "signatures", is_flag=True,
              help="Also check each model against its signature (model.sig), every byte re-hashed, trusting "
                   "--signature-key, --signature-cert or --signature-identity/--signature-issuer.")
@json_option
@reports_errors
def verify(specs, datasets_only, repair, signatures, as_json, **flags):
    """Re-hash cached files (sha256 for LFS files, git blob sha1 for others) against their etags.

    Reports missing, truncated and corrupt files; a broken snapshot loses its
    completion record. With --signature, each model's files are also re-hashed
    against its signature (a model without one fails). Exit 1 when anything is
    (still) broken or any signature check fails.
    """
    s = load_settings(flags)
    trust = None
    if signatures:
        from ..preloading.signatures import Trust

        trust = Trust.from_settings(s)
        if trust is None:
            fail("verify --signature needs PRELOADER_SIGNATURE_KEY, PRELOADER_SIGNATURE_CERT or "
                 "PRELOADER_SIGNATURE_IDENTITY + PRELOADER_SIGNATURE_ISSUER (or their flags)", 78, flags)
    hub = None
    if repair:
        from ..hub.client import Hub

        hub = Hub.from_settings(s)
    chosen = parse_spec_args(specs, datasets_only) if specs else None
    checks = cache.verify(s.layout, chosen, repair=repair, hub=hub, lock_timeout=s.lock_timeout, locking=locking(s))
    document, text = render.verify_json(checks), render.verify_text(checks)
    ok = all(c.ok for c in checks)
    if trust is not None:
        found = signature_checks(s, checks, trust)
        for entry, check in zip(document["snapshots"], checks, strict=True):
            entry["signature"] = found.get(id(check))
        document["ok"] = ok = ok and all(f["ok"] for f in found.values())
        text = "\n".join(line for line in [text, *(signature_line(f) for f in found.values())] if line)
    emit(as_json, document, text)
    sys.exit(0 if ok else 1)


def signature_checks(s, checks, trust) -> dict[int, dict]:
    """{id(snapshot check): its signature check, as JSON} for every model snapshot that was checked."""
    from dataclasses import asdict

    from ..preloading.signatures import check_cached
    from ..spec import RepoSpec

    found = {}
    for c in checks:
        if c.repo_type == "model" and c.unsafe is None:
            check = check_cached(s.layout, RepoSpec(c.repo_type, c.repo_id, c.commit), c.commit, trust,
                                 s.signature_file)
            found[id(c)] = dict(asdict(check), ok=check.ok)
    return found


def signature_line(found: dict) -> str:
    head = f"{'signed' if found['ok'] else 'REFUSED'}  {found['repo_type']} {found['repo_id']}@{found['commit'][:12]}"
    if found["ok"]:
        return f"{head}  {found['files']} files match {found['file']}  ({found['signer']})"
    return f"{head}  " + "; ".join(found["problems"])


@click.command(name="rm")
@settings_options(names=CACHE_SETTINGS + LOCK_SETTINGS + ("lock_timeout",))
@spec_arguments
@click.option("--revision", help="Remove only this revision (branch, tag or commit) of each SPEC.")
@click.option("--all", "everything", is_flag=True, help="Remove every repo in the cache.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation on a TTY.")
@click.option("--dry-run", is_flag=True, help="Show what would be removed.")
@json_option
@reports_errors
def rm_command(specs, datasets_only, revision, everything, yes, dry_run, as_json, **flags):
    """Remove repos (SPEC: user/name) or revisions (user/name:revision, or --revision).

    Removes snapshots, their refs, aliases and `latest` links, and blobs no
    remaining revision uses. Takes the repo lock: waits for a running preload,
    or fails (75) after --lock-timeout.
    """
    if bool(specs) == everything:
        raise click.UsageError("give SPECs or --all (not both)")
    s = load_settings(flags)
    whole, revisions = parse_removals(list(specs), "dataset" if datasets_only else "model", revision)
    if not dry_run and not yes and sys.stdin.isatty():
        planned = cache.remove(s.layout, whole, revisions, everything=everything, dry_run=True)
        click.confirm(f"Remove {len(planned.removed)} snapshot(s) from {s.cache_dir}?", abort=True, err=True)
    report = cache.remove(s.layout, whole, revisions, everything=everything, lock_timeout=s.lock_timeout,
                          dry_run=dry_run, locking=locking(s))
    emit(as_json, render.removal_json(report, "rm"), render.removal_text(report))
    fail_on_partial_removals(report)


@click.command()
@settings_options(names=CACHE_SETTINGS + LOCK_SETTINGS)
@click.option("--max-size", type=SIZE, help="Evict until the cache is at most this big (500M, 200G, 1.5T).")
@click.option("--older-than", type=DURATION, help="Evict snapshots not used for this long (12h, 30d).")
@click.option("--keep-last", type=click.IntRange(min=0), default=0, show_default=True,
              help="Never evict the N most recently used snapshots of each repo.")
@click.option("--keep", multiple=True, metavar="SPEC", help="Never evict this user/name[:revision] (repeatable).")
@click.option("--keep-dataset", multiple=True, metavar="SPEC", help="Never evict this dataset (repeatable).")
@click.option("--grace", type=DURATION, default="1h", show_default=True,
              help="Remove partial downloads and temp files older than this.")
@click.option("--dry-run", is_flag=True, help="Show what would go.")
@json_option
@reports_errors
def prune(max_size, older_than, keep_last, keep, keep_dataset, grace, dry_run, as_json, **flags):
    """Evict least recently used complete snapshots until the bounds hold; clean stale leftovers.

    "Used" is recorded when the preloader hands a snapshot to a service or
    `wait` returns it. Never evicts a locked repo's snapshots or a --keep.
    """
    kept = parse_specs(list(keep), "model", "--keep") + parse_specs(list(keep_dataset), "dataset", "--keep-dataset")
    s = load_settings(flags)
    report = cache.prune(s.layout, max_size=max_size, older_than=older_than, keep_last=keep_last, keep=kept,
                         grace=grace, dry_run=dry_run, locking=locking(s))
    emit(as_json, render.removal_json(report, "prune"), render.removal_text(report))
    fail_on_partial_removals(report)


def fail_on_partial_removals(report) -> None:
    """Exit 74 when a removal failed part-way: the report above lists it under skipped, and what is left."""
    if report.failed:
        more = f" (and {len(report.failed) - 1} more, listed above)" if len(report.failed) > 1 else ""
        raise DiskError(f"{len(report.failed)} removal(s) failed part-way and were not counted: "
                        f"{report.failed[0]}{more}")


@click.command(name="dedup")
@settings_options(names=CACHE_SETTINGS + LOCK_SETTINGS)
@click.option("--dry-run", is_flag=True, help="Show what would be linked.")
@json_option
@reports_errors
def dedup_command(dry_run, as_json, **flags):
    """Store byte-identical files of several repos once (hard links); report the bytes saved.

    Forks, re-uploads and quantization repos often carry the same files. New
    downloads are linked this way already; this does it for what is on the volume.
    """
    s = load_settings(flags)
    report = cache.dedup(s.layout, dry_run=dry_run, locking=locking(s))
    emit(as_json, render.dedup_json(report), render.dedup_text(report))


@click.command(name="export")
@settings_options(names=CACHE_SETTINGS)
@spec_arguments
@click.option("--all", "everything", is_flag=True, help="Every complete snapshot in the cache.")
@click.option("-o", "--output", required=True, metavar="FILE|-",
              help="The archive: FILE.tar, FILE.tar.zst (zstd, with the zstandard package), or - for stdout.")
@reports_errors
def export_command(specs, datasets_only, everything, output, **flags):
    """Write complete snapshots (SPEC..., or --all) to one streaming archive: each blob once, the links,
    refs and completion records, and a manifest of sizes and hashes.

        preloader export --all -o - | ssh host preloader import -
    """
    if bool(specs) == everything:
        raise click.UsageError("give SPECs or --all (not both)")
    s = load_settings(flags)
    chosen = None if everything else parse_spec_args(specs, datasets_only)
    if output == "-":
        report = export_to_stdout(s.layout, chosen)
    else:
        report = archive.export_to_file(s.layout, chosen, Path(output))
    logs.event(logger, "export.done", snapshots=len(report.snapshots), blobs=report.blobs, bytes=report.bytes,
               size=human_size(report.bytes), output=output)


def export_to_stdout(layout, chosen) -> archive.ExportReport:
    """The archive onto stdout; a reader that goes away early (`| head -c 1000`) is exit 141 with one line, and a
    full disk under a redirected stdout is 74: the archive on the other end is incomplete either way."""
    out = sys.stdout.buffer
    try:
        report = archive.export(layout, chosen, out)
        out.flush()
    except BrokenPipeError:
        silence_stdout()
        raise OutputClosedError("the reader of the archive on stdout went away before its end; what it got is "
                                "incomplete (nothing in the cache changed)") from None
    except OSError as error:
        if error.filename is not None:
            raise
        raise os_error(OSError(error.errno, error.strerror, "the archive on stdout"), "write") from None
    return report


@click.command(name="import")
@settings_options(names=CACHE_SETTINGS + LOCK_SETTINGS + ("lock_timeout",))
@click.argument("source", metavar="FILE|-")
@json_option
@reports_errors
def import_command(source, as_json, **flags):
    """Read an archive of `preloader export` into the cache, checking every file against its etag first.

    Blobs the cache already holds are skipped; a hostile or damaged archive is
    refused (76) with nothing written. Restore = import what `export --all` wrote.
    """
    s = load_settings(flags)
    options = {"locking": locking(s), "lock_timeout": s.lock_timeout}
    if source == "-":
        report = archive.import_archive(s.layout, sys.stdin.buffer, **options)
    else:
        report = archive.import_file(s.layout, Path(source), **options)
    emit(as_json, render.import_json(report), render.import_text(report))


@click.command()
@settings_options
@json_option
@reports_errors
def doctor(as_json, **flags):
    """Check this machine and cache: location, permissions, space, hub, token, symlinks, flock, GPU.

    Each check prints ok / warn / fail and a one-line fix. Exit 1 if any fails.
    """
    from ..doctor import run_checks  # its probes (and maybe torch) only for this command

    checks = run_checks(load_settings(flags))
    emit(as_json, render.doctor_json(checks), render.doctor_text(checks))
    sys.exit(1 if any(c.status == "fail" for c in checks) else 0)
