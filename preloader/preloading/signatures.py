"""Model signatures (OpenSSF model signing, the `model-signing` package): a complete model is checked against
its signature after the preload and before the hand-off (PRELOADER_SIGNATURE), and on demand by
`preloader verify --signature`.

Cheap on every start: the signature's own crypto is checked once, then each selected file's signed sha256 is
compared with the sha256 its blob is named by (checked against those bytes as they were downloaded); only
files without one (small non-LFS files, named by their git blob id) are read. A pass is recorded in the
completion record (signature digest, signer, files), so a cached start with the same signature and trust
costs a file read. `model_signing` is imported only when a signature is to be checked: it is slow to import.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..cache import digests, records
from ..cache.inventory import snapshot_blobs
from ..cache.layout import Layout
from ..config import Settings
from ..errors import SignatureError
from ..logs import Clock, event, shown
from ..spec import RepoSpec
from .results import PreloadResult

logger = logging.getLogger(__name__)

# What model_signing leaves out of a manifest by default: these need no listing, whatever the selection.
GIT_FILES = (".git/", ".gitattributes", ".github/", ".gitignore")
INSTALL = "pip install 'hf-preloader[signing]'"


@dataclass(frozen=True)
class Trust:
    """What a signature must chain to: a public key, trusted certificates, or a sigstore identity."""

    method: str  # key | certificate | identity
    path: Path | None = None
    identity: str | None = None
    issuer: str | None = None
    offline: bool = False  # sigstore: the trust root shipped with sigstore (or last fetched), no TUF refresh

    @classmethod
    def from_settings(cls, settings: Settings) -> Trust | None:
        if settings.signature_key is not None:
            return cls("key", settings.signature_key)
        if settings.signature_cert is not None:
            return cls("certificate", settings.signature_cert)
        if settings.signature_identity:
            return cls("identity", identity=settings.signature_identity, issuer=settings.signature_issuer,
                       offline=settings.offline)
        return None

    @property
    def signer(self) -> str:
        """What the record says was trusted: the key's or certificates' own digest (a path can change what it
        holds), or the identity and its issuer."""
        if self.path is not None:
            return f"{self.method} sha256:{digests.sha256_file(self.path)}"
        return f"identity {self.identity} issuer {self.issuer}"

    @property
    def setting(self) -> str:
        """For messages: the setting that says what is trusted."""
        if self.method == "identity":
            return f"PRELOADER_SIGNATURE_IDENTITY={self.identity!r} (issuer {self.issuer})"
        env = "PRELOADER_SIGNATURE_KEY" if self.method == "key" else "PRELOADER_SIGNATURE_CERT"
        return f"{env}={str(self.path)!r}"

    def verify(self, signature: Path):
        """The manifest `signature` signs, once its crypto checks out against this trust; SignatureError if not."""
        try:
            from model_signing._signing import sign_certificate, sign_ec_key, sign_sigstore, sign_sigstore_pb
        except ImportError as error:
            raise SignatureError(f"signature checking needs the model-signing package ({error}); {INSTALL}") \
                from None
        try:
            if self.method == "identity":
                return _keyless(self).verify(sign_sigstore.Signature.read(signature))
            verifier = (sign_ec_key.Verifier(self.path) if self.method == "key"
                        else sign_certificate.Verifier([self.path]))
            return verifier.verify(sign_sigstore_pb.Signature.read(signature))
        except SignatureError:
            raise
        except Exception as error:  # noqa: BLE001 - model_signing, sigstore, OpenSSL and cryptography each raise their own
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise _Untrusted(shown(reason, 200, quote=False)) from None


class _Untrusted(Exception):
    """The signature's crypto does not check out against the trust given."""


def _keyless(trust: Trust):
    """model_signing's sigstore verifier, with the trust root taken offline when asked: model_signing always
    refreshes it over the network (TUF), which a start with PRELOADER_OFFLINE must not do."""
    from model_signing._signing import sign_sigstore
    from sigstore import models as sigstore_models
    from sigstore.verify import Verifier, policy

    class Keyless(sign_sigstore.Verifier):
        def __init__(self) -> None:  # noqa: D107 - the parent's, with `offline`
            config = sigstore_models.ClientTrustConfig.production(offline=trust.offline)
            self._verifier = Verifier(trusted_root=config.trusted_root)
            self._policy = policy.Identity(identity=trust.identity, issuer=trust.issuer)

    try:
        return Keyless()
    except Exception as error:  # noqa: BLE001 - TUF and sigstore raise their own
        where = "the sigstore trust root shipped with sigstore" if trust.offline else \
            "the sigstore trust root (TUF, https://tuf-repo-cdn.sigstore.dev)"
        raise SignatureError(f"cannot load {where}: {type(error).__name__}: {shown(str(error), 160, quote=False)}"
                             + ("" if trust.offline else "; without network, set PRELOADER_OFFLINE=1 to use the "
                                "one shipped with sigstore")) from None


@dataclass
class SignatureCheck:
    """What checking one snapshot against its signature found."""

    repo_type: str
    repo_id: str
    commit: str
    file: str
    status: str = "refused"  # verified | cached | absent | refused
    signer: str | None = None
    files: int = 0  # selected files compared
    hashed: int = 0  # of them, read to hash
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in ("verified", "cached")

    def summary(self) -> str:
        """The problems for one line: the first five, and how many more."""
        more = f"; and {len(self.problems) - 5} more" if len(self.problems) > 5 else ""
        return "; ".join(self.problems[:5]) + more


def skipped(path: str, signature_file: str) -> bool:
    """A file no signature needs to list: the signature itself, and the git files model_signing ignores."""
    return path == signature_file or any(path == g or (g.endswith("/") and path.startswith(g)) for g in GIT_FILES)


def check_snapshot(spec: RepoSpec, commit: str, snapshot: Path, selected: Iterable[str], trust: Trust, *,
                   signature_file: str, required: bool, listing: dict[str, int] | None = None,
                   recorded: dict | None = None, rehash: bool = False) -> tuple[SignatureCheck, dict | None]:
    """Check the `selected` files of a snapshot against its signature; (what was found, the verification to
    record, or None). `recorded`: a verification already in the record (reused when the signature, the trust
    and the files are the same); `rehash`: read every file (trust no blob name); `listing`: the commit's whole
    listing, to tell a signature the selection left out from none."""
    check = SignatureCheck(spec.repo_type, spec.repo_id, commit, signature_file)
    where = snapshot / signature_file
    selected = set(selected)
    if not where.is_file():
        if signature_file in selected:
            check.problems.append(f"{signature_file} is missing from the snapshot; check the volume with "
                                  "`preloader verify --repair`")
        elif listing is not None and signature_file in listing:
            check.problems.append(f"{signature_file} is in the commit but the plan's selection leaves it out; "
                                  "add it to PRELOADER_INCLUDE")
        elif required:
            check.problems.append(f"no {signature_file} in the commit (PRELOADER_SIGNATURE=required); sign the "
                                  "model or set PRELOADER_SIGNATURE_FILE")
        else:
            check.status = "absent"
        return check, None
    wanted = sorted(p for p in selected if not skipped(p, signature_file))
    check.files = len(wanted)
    signature_digest = digests.sha256_file(where)
    check.signer = trust.signer
    if (not rehash and recorded and recorded.get("signature") == signature_digest
            and recorded.get("signer") == check.signer and set(wanted) <= set(recorded.get("files") or {})):
        check.status = "cached"
        return check, None
    try:
        manifest = trust.verify(where)
    except _Untrusted as error:
        check.problems.append(f"{signature_file} does not verify with {trust.setting}: {error}")
        return check, None
    expected = _by_path(manifest)
    unlisted = [p for p in wanted if p not in expected]
    check.problems += [f"{p}: not listed in {signature_file}" for p in unlisted]
    actual = _actual(manifest, snapshot, [p for p in wanted if p in expected], rehash, check)
    for path in wanted:
        if path in expected and path in actual and actual[path] != expected[path]:
            check.problems.append(f"{path}: digest differs from {signature_file}'s")
    if check.problems:
        return check, None
    check.status = "verified"
    files = {path: next(iter(actual[path].values())) if len(actual[path]) == 1 else _joined(actual[path])
             for path in wanted}
    return check, {"signature": signature_digest, "signer": check.signer, "files": files, "verified_at": time.time()}


def _joined(parts: dict[str, str]) -> str:
    """One digest for a file signed in shards: of its shards' digests, in order."""
    return hashlib.sha256("".join(f"{k}={v}\n" for k, v in sorted(parts.items())).encode()).hexdigest()


def _by_path(manifest) -> dict[str, dict[str, str]]:
    """{file: {resource: digest hex}}: one resource per file, or one per shard (`path:start:end`)."""
    sharded = manifest.serialization_type.get("method") == "shards"
    found: dict[str, dict[str, str]] = {}
    for resource in manifest.resource_descriptors():
        path = resource.identifier.rsplit(":", 2)[0] if sharded else resource.identifier
        found.setdefault(path, {})[resource.identifier] = resource.digest.digest_hex
    return found


def _actual(manifest, snapshot: Path, paths: list[str], rehash: bool, check: SignatureCheck) -> dict:
    """The same shape as `_by_path` for the snapshot's files: sha256 from blob names where the signature is
    per file in sha256; otherwise hashed as the signature says (model_signing's own hashing)."""
    params = manifest.serialization_type
    if params.get("method") == "files" and params.get("hash_type") == "sha256":
        found = {}
        for path in paths:
            try:
                digest, read = digests.sha256_of(snapshot, path, rehash=rehash)
            except OSError as error:
                check.problems.append(f"{path}: cannot read it ({error.strerror or error})")
                continue
            check.hashed += read
            found[path] = {path: digest}
        return found
    from model_signing import hashing

    if not paths:
        return {}
    try:
        config = hashing.Config()
        if params.get("method") == "shards":
            shard = params.get("shard_size")
            if not isinstance(shard, (int, float)) or shard != int(shard) or shard < 1:
                raise ValueError(f"shard size {shard!r}")
            # The size comes back from the signature's JSON as a float, which model_signing cannot range over.
            config.use_shard_serialization(hashing_algorithm=params["hash_type"], shard_size=int(shard))
        else:
            config.use_file_serialization(hashing_algorithm=params["hash_type"])
        config.set_allow_symlinks(True)  # a snapshot's files are links to their blobs
        check.hashed += len(paths)
        return _by_path(config.hash(snapshot, files_to_hash=[snapshot / p for p in paths]))
    except (ValueError, KeyError, TypeError, OSError) as error:
        check.problems.append(f"cannot hash as the signature says ({shown(str(params), 120, quote=False)}): "
                              f"{shown(str(error), 120, quote=False)}")
        return {}


def refusal(check: SignatureCheck) -> SignatureError:
    return SignatureError(f"signature refused for {check.repo_type} {check.repo_id}@{check.commit[:12]}: "
                          f"{check.summary()}; the service was not started and nothing was deleted")


def check_results(settings: Settings, results: Iterable[PreloadResult]) -> None:
    """The start's check (PRELOADER_SIGNATURE): every model among `results`, complete, against its signature,
    on the files the plan selected; SignatureError (65) for the first refusal. A pass is recorded."""
    if settings.signature == "off":
        return
    trust = Trust.from_settings(settings)
    for result in results:
        if result.repo_type != "model":
            continue  # datasets carry no model signature
        spec = result.spec
        ours = result.hub_cache == settings.cache_dir
        layout = settings.layout if ours else Layout.build(result.hub_cache)  # a read-only tier: not written
        state = records.check(layout, spec, result.commit, selection=settings.selection(spec), contained=ours)
        record = state.record
        clock = Clock()
        check, verification = check_snapshot(
            spec, result.commit, result.path, state.wanted, trust, signature_file=settings.signature_file,
            required=settings.signature == "required", listing=record.listing if record else None,
            recorded=record.verification if record else None)
        if not check.ok and check.status != "absent":
            raise refusal(check)
        event(logger, f"signature.{check.status}", repo=result.repo_id, commit=result.commit, files=check.files,
              hashed=check.hashed, signer=check.signer or "-", secs=clock.seconds())
        if verification is not None and ours:
            records.mark_verified(layout, spec, result.commit, verification)


def check_cached(layout: Layout, spec: RepoSpec, commit: str, trust: Trust, signature_file: str) -> SignatureCheck:
    """`verify --signature`: every file the record says complete, re-hashed, against the signature (required)."""
    record = records.read(layout, spec, commit)
    snapshot = layout.snapshot_dir(spec, commit)
    # What a service could read: every file there, and every file the record says complete (one gone is a problem).
    files = set(snapshot_blobs(snapshot)) | set(record.complete if record else ())
    check, _ = check_snapshot(spec, commit, snapshot, files, trust,
                              signature_file=signature_file, required=True,
                              listing=record.listing if record else None, rehash=True)
    return check
