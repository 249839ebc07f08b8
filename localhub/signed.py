"""Signed model repos (OpenSSF model signing) for the signature tests, signed while the mirror is built with
keys made then (into ``<root>/signing``), so that the signature file is committed into the repo as on the hub.

Repos::

    org/signed-model     signed with the test key (config, README and weights listed)
    org/signed-tampered  the same model.sig, but weights with other bytes: a signature covering other bytes
    org/signed-extra     signed, then a file added after signing: a selected file the signature does not list
    org/unsigned-model   no signature
    org/cert-signed      signed with a certificate issued by a test CA
    org/shard-signed     signed in 1 KiB shards (model_signing's other serialization)

ECDSA signatures are randomised, so these commits differ from one build to the next (the keys do too).
"""

from __future__ import annotations

import datetime
import tempfile
from dataclasses import dataclass
from pathlib import Path

SIGNED, TAMPERED, EXTRA, UNSIGNED, CERT_SIGNED, SHARDED = (
    "org/signed-model", "org/signed-tampered", "org/signed-extra", "org/unsigned-model", "org/cert-signed",
    "org/shard-signed")


@dataclass(frozen=True)
class SigningKeys:
    """Paths of the keys and certificates made for a mirror (all PEM)."""

    root: Path

    @property
    def private(self) -> Path:
        return self.root / "key.priv"

    @property
    def public(self) -> Path:
        return self.root / "key.pub"

    @property
    def other_public(self) -> Path:
        """A key that signed nothing here: the wrong key."""
        return self.root / "other.pub"

    @property
    def ca(self) -> Path:
        return self.root / "ca.pem"

    @property
    def other_ca(self) -> Path:
        """A CA that issued nothing here."""
        return self.root / "other-ca.pem"

    @property
    def leaf_key(self) -> Path:
        return self.root / "leaf.priv"

    @property
    def leaf(self) -> Path:
        return self.root / "leaf.pem"


def keys(root: Path) -> SigningKeys:
    """The keys of the mirror built at `root` (see :func:`build_signed`)."""
    return SigningKeys(Path(root) / "signing")


def _pem_private(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem_public(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def _certificate(subject: str, key, issuer_name: str, issuer_key, *, ca: bool):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=not ca, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False, key_agreement=False,
                                            key_cert_sign=ca, crl_sign=ca, encipher_only=False,
                                            decipher_only=False), critical=True))
    if not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_keys(root: Path) -> SigningKeys:
    """A signing key pair, a second public key, a test CA with a leaf certificate, and a second CA."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    made = keys(root)
    made.root.mkdir(parents=True)
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    made.private.write_bytes(_pem_private(key))
    made.public.write_bytes(_pem_public(key))
    made.other_public.write_bytes(_pem_public(other))
    ca_key, leaf_key, other_ca_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    pem = serialization.Encoding.PEM
    made.ca.write_bytes(_certificate("preloader test CA", ca_key, "preloader test CA", ca_key, ca=True)
                        .public_bytes(pem))
    made.other_ca.write_bytes(_certificate("other CA", other_ca_key, "other CA", other_ca_key, ca=True)
                              .public_bytes(pem))
    made.leaf_key.write_bytes(_pem_private(leaf_key))
    made.leaf.write_bytes(_certificate("model signer", leaf_key, "preloader test CA", ca_key, ca=False)
                          .public_bytes(pem))
    return made


def sign(files: dict[str, bytes], made: SigningKeys, *, certificate: bool = False, shard: int | None = None
         ) -> bytes:
    """The model.sig model_signing makes for `files` (as the hub serves them), with the test key or the
    test CA's leaf certificate, per file (sha256) or in shards of `shard` bytes."""
    from model_signing import hashing, signing

    with tempfile.TemporaryDirectory() as folder:
        model = Path(folder) / "model"
        for name, data in files.items():
            (model / name).parent.mkdir(parents=True, exist_ok=True)
            (model / name).write_bytes(data)
        config = signing.Config()
        if certificate:
            config.use_certificate_signer(private_key=made.leaf_key, signing_certificate=made.leaf,
                                          certificate_chain=[made.ca])
        else:
            config.use_elliptic_key_signer(private_key=made.private)
        if shard is not None:
            config.set_hashing_config(hashing.Config().use_shard_serialization(shard_size=shard))
        config.sign(model, Path(folder) / "model.sig")
        return (Path(folder) / "model.sig").read_bytes()


def build_signed(m, repo_class, lfs: bool, attrs: dict[str, bytes], bert_files, card) -> SigningKeys:
    """Add the signed repos to mirrors `m`, with localhub.mirrors' own repo driver and file makers."""
    made = make_keys(m.root)
    model = {"README.md": card("signed-model", "A signed tiny BERT."), **bert_files(20)}

    r = repo_class(m, "model", SIGNED, lfs)
    signature = sign(model, made)
    r.write({**attrs, **model, "model.sig": signature})
    r.commit("signed model", 0)

    r = repo_class(m, "model", TAMPERED, lfs)
    r.write({**attrs, **model, **{"model.safetensors": bert_files(21)["model.safetensors"]}, "model.sig": signature})
    r.commit("weights changed after signing", 0)

    r = repo_class(m, "model", EXTRA, lfs)
    r.write({**attrs, **model, "model.sig": signature, "extra.py": b"print('not signed')\n"})
    r.commit("a file added after signing", 0)

    r = repo_class(m, "model", UNSIGNED, lfs)
    r.write({**attrs, **model})
    r.commit("unsigned model", 0)

    r = repo_class(m, "model", CERT_SIGNED, lfs)
    r.write({**attrs, **model, "model.sig": sign(model, made, certificate=True)})
    r.commit("certificate-signed model", 0)

    r = repo_class(m, "model", SHARDED, lfs)
    r.write({**attrs, **model, "model.sig": sign(model, made, shard=1024)})
    r.commit("model signed in shards", 0)
    return made


def swap_repo(real: str, served: str):
    """A proxy fault (``hub.add_rule(*swap_repo(...))``): every request for repo `real` is answered with repo
    `served`'s listing and bytes, as a compromised hub or mirror serves other weights under the same name (its
    listing agreeing with them, so no etag check can tell)."""
    import re

    from .faults import Action

    pattern = re.compile(rf"/{re.escape(real)}(?=/|$)")

    class SwapRepo(Action):
        def upstream_path(self, ex, path: str) -> str:
            head, sep, query = path.partition("?")
            return pattern.sub(f"/{served}", head) + sep + query

    return (lambda method, path: pattern.search(path.partition("?")[0]) is not None), SwapRepo()
