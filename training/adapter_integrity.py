"""What serves is what was registered: a digest of the whole adapter folder, kept by the registry, checked on load.

At registration the registry stores, as version tags, the folder's digest (every file, `manifest.json` included,
in a canonical order), the list of its files and, when a signing key is set, an HMAC-SHA256 of the digest. Every
load (serving, evaluation, export, promotion) recomputes the digest from the downloaded bytes and refuses a
mismatch, an extra file or a missing one: rewriting the weights together with the manifest, or the manifest's
labels alone, no longer passes.

Versions registered before digests existed carry none: they are checked as far as their own records allow (every
file the manifest lists, the weights against the registry's full sha256, the labels against the registry's labels
tag, no file the manifest does not list but PEFT's model card) and reported as `legacy`.

    registered = RegisteredIntegrity(digest=..., files=(...), adapter_sha256=..., labels=(...))
    verified = verify_registered_adapter(folder, registered, signing_key=None)   # raises AdapterError
    verified.status                                                               # Integrity.VERIFIED

A version is also an MLflow model: the files MLflow needs to load it (`MLmodel`, its environment files, an input
example, `pooling.py`) lie in the same folder, around the adapter (registry/mlflow_model.py). The registry records
their names and digest (and signature) apart from the adapter's: they are checked against that record and then left
out, so the adapter's own digest, file list and legacy checks stay exactly what they were before.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from prefix_registry.errors import AdapterError
from prefix_registry.training.adapter_files import (
    ADAPTER_WEIGHTS,
    LABELS_FILE,
    MANIFEST_FILE,
    AdapterManifest,
    sha256_file,
    verify_adapter_files,
)

logger = logging.getLogger(__name__)

# The one file a legacy folder may hold beyond what its manifest lists: the model card PEFT's save_pretrained writes.
PEFT_MODEL_CARD = "README.md"
# What MLflow writes into a model folder it loads through `models:/` (the registered model's name and version, read by
# nothing here). From a local artifact store it loads the folder in place, so the registry's own copy of a version
# that is an MLflow model gains this file the first time MLflow loads it.
MLFLOW_LOAD_RECORD = "registered_model_meta"


class Integrity(StrEnum):
    """How far a loaded adapter was checked against the registry."""

    SIGNED = "signed"  # digest matches and its HMAC signature checks out with the configured key
    VERIFIED = "verified"  # digest matches (unsigned, or signed with no key configured to check it)
    LEGACY = "legacy"  # registered before digests: every recorded checksum matches, the manifest itself unchecked


@dataclass(frozen=True)
class RegisteredIntegrity:
    """What the registry recorded about a version's adapter folder at registration.

    `digest` None marks a version registered before digests (legacy). `files` are the folder's relative paths.
    """

    digest: str | None = None
    files: tuple[str, ...] = ()
    signature: str | None = None
    adapter_sha256: str | None = None
    labels: tuple[str, ...] = ()
    # The MLflow model's files around the adapter (none: the version is not an MLflow model yet), their digest and
    # its signature: the same `digest_of` and `sign_digest`, over those files only.
    model_files: tuple[str, ...] = ()
    model_digest: str | None = None
    model_signature: str | None = None


@dataclass(frozen=True)
class VerifiedAdapter:
    """An adapter folder whose bytes were checked, its manifest, and how far the check went."""

    manifest: AdapterManifest
    status: Integrity
    digest: str


def folder_files(directory: Path) -> dict[str, str]:
    """Relative POSIX path -> sha256 of every file under `directory` (sorted by path).

    Raises AdapterError for anything that is neither a folder nor a regular file (a link could point anywhere).
    """
    found: dict[str, str] = {}
    for path in sorted(directory.rglob("*")):
        name = path.relative_to(directory).as_posix()
        if path.is_symlink() or not (path.is_dir() or path.is_file()):
            raise AdapterError(f"adapter folder {directory} holds {name!r}, which is not a regular file")
        if path.is_file():
            found[name] = sha256_file(path)
    return dict(sorted(found.items()))


def digest_of(files: dict[str, str]) -> str:
    """The folder digest: sha256 of one `path NUL sha256 LF` line per file, in path order."""
    lines = "".join(f"{name}\0{sha}\n" for name, sha in sorted(files.items()))
    return hashlib.sha256(lines.encode("utf-8", "surrogateescape")).hexdigest()


def folder_digest(directory: Path) -> str:
    """The digest of every file under `directory` (see `digest_of`)."""
    return digest_of(folder_files(directory))


def sign_digest(digest: str, key: str) -> str:
    """HMAC-SHA256 of the digest with the registry's signing key, hex."""
    return hmac.new(key.encode("utf-8"), digest.encode("ascii"), hashlib.sha256).hexdigest()


def registration_record(directory: Path, signing_key: str | None = None) -> RegisteredIntegrity:
    """What the registry stores about a folder about to be registered (digest, files, signature when keyed)."""
    files = folder_files(directory)
    digest = digest_of(files)
    return RegisteredIntegrity(
        digest=digest, files=tuple(files), signature=sign_digest(digest, signing_key) if signing_key else None
    )


def model_files_record(
    directory: Path, names: Collection[str], registered: RegisteredIntegrity, signing_key: str | None = None
) -> RegisteredIntegrity:
    """`registered` (the adapter's record) with the MLflow model's files `names` of `directory` recorded beside it."""
    odd = sorted(name for name in names if "," in name)
    if odd:
        raise AdapterError(f"MLflow model file names must not hold a comma (the registry lists them so), got {odd}")
    clash = sorted(set(names) & set(registered.files))
    if clash:
        raise AdapterError(f"MLflow model files must not replace adapter files, but {', '.join(clash)} would")
    files = {name: sha256_file(directory / name) for name in sorted(names)}
    digest = digest_of(files)
    return dataclasses.replace(
        registered,
        model_files=tuple(files),
        model_digest=digest,
        model_signature=sign_digest(digest, signing_key) if signing_key else None,
    )


def verify_registered_adapter(
    directory: Path,
    registered: RegisteredIntegrity,
    signing_key: str | None = None,
    *,
    beside: Collection[str] = (),
) -> VerifiedAdapter:
    """Check a downloaded adapter folder against what the registry recorded; return its manifest and status.

    The MLflow model's files the registry recorded (`registered.model_files`) are checked against their own digest,
    then left out with the files named in `beside` (those a caller accounts for itself) and, in an MLflow model, the
    record MLflow writes when it loads it (`MLFLOW_LOAD_RECORD`); what remains is checked as the adapter. Raises
    AdapterError naming the extra, missing or changed file, or the digest / signature that does not match.
    """
    files = folder_files(directory)
    left_out = {*_verified_model_files(directory, files, registered, signing_key), *beside}
    if registered.model_digest is not None:
        left_out.add(MLFLOW_LOAD_RECORD)
    files = {name: sha256 for name, sha256 in files.items() if name not in left_out}
    digest = digest_of(files)
    if registered.digest is None:
        return VerifiedAdapter(_verify_legacy(directory, files, registered), Integrity.LEGACY, digest)
    expected = set(registered.files)
    extra = sorted(set(files) - expected)
    missing = sorted(expected - set(files))
    if extra:
        raise AdapterError(f"adapter folder {directory} holds {', '.join(extra)}, which the registry never recorded")
    if missing:
        raise AdapterError(f"adapter file {', '.join(missing)} is missing from {directory}")
    manifest = verify_adapter_files(directory)  # first, so that a damaged file is named
    if not hmac.compare_digest(digest, registered.digest):
        raise AdapterError(
            f"adapter folder {directory} was changed after registration: digest {digest[:12]}… does not match the "
            f"registry's {registered.digest[:12]}…"
        )
    status = Integrity.VERIFIED
    if registered.signature and signing_key:
        if not hmac.compare_digest(sign_digest(digest, signing_key), registered.signature):
            raise AdapterError(
                f"adapter folder {directory}: the registry's signature of its digest does not match the signing key"
            )
        status = Integrity.SIGNED
    return VerifiedAdapter(manifest, status, digest)


def verify_packaged_adapter(directory: Path, digest: str, files: Collection[str]) -> VerifiedAdapter:
    """Check the adapter inside a folder that holds more than the adapter (an MLflow model, as MLflow downloaded it:
    its own files and whatever it adds on the way, such as `registered_model_meta`).

    Only the adapter files named in `files` are read by whoever attaches the adapter, so they are what is checked:
    each must be there and together they must have `digest`; the other files are not the adapter's. Raises
    AdapterError as `verify_registered_adapter` does.
    """
    if not files:
        raise AdapterError(f"no adapter files recorded for {directory}; expected the adapter's file list")
    present = set(folder_files(directory))
    beside = present - set(files)
    return verify_registered_adapter(directory, RegisteredIntegrity(digest=digest, files=tuple(files)), beside=beside)


def _verified_model_files(
    directory: Path, files: dict[str, str], registered: RegisteredIntegrity, signing_key: str | None
) -> tuple[str, ...]:
    """The MLflow model's files the registry recorded, once checked against their record (none recorded: none)."""
    if registered.model_digest is None:
        return ()
    missing = sorted(set(registered.model_files) - set(files))
    if missing:
        raise AdapterError(f"MLflow model file {', '.join(missing)} is missing from {directory}")
    digest = digest_of({name: files[name] for name in registered.model_files})
    if not hmac.compare_digest(digest, registered.model_digest):
        raise AdapterError(
            f"the MLflow model files in {directory} were changed after they were logged: digest {digest[:12]}… does "
            f"not match the registry's {registered.model_digest[:12]}…"
        )
    signed = registered.model_signature
    if signed and signing_key and not hmac.compare_digest(sign_digest(digest, signing_key), signed):
        raise AdapterError(
            f"adapter folder {directory}: the registry's signature of its MLflow model files does not match the "
            "signing key"
        )
    return registered.model_files


def _verify_legacy(directory: Path, files: dict[str, str], registered: RegisteredIntegrity) -> AdapterManifest:
    """A version registered before digests: check what its records allow (see the module docstring)."""
    manifest = verify_adapter_files(directory)
    listed = {*manifest.files, MANIFEST_FILE, PEFT_MODEL_CARD}
    extra = sorted(set(files) - listed)
    if extra:
        raise AdapterError(f"adapter folder {directory} holds {', '.join(extra)}, which its manifest does not list")
    if registered.adapter_sha256 and not hmac.compare_digest(files[ADAPTER_WEIGHTS], registered.adapter_sha256):
        raise AdapterError(
            f"adapter file {ADAPTER_WEIGHTS} is not the one registered: sha256 {files[ADAPTER_WEIGHTS][:12]}… does "
            f"not match the registry's {registered.adapter_sha256[:12]}…"
        )
    if registered.labels and tuple(manifest.labels) != registered.labels:
        raise AdapterError(
            f"adapter manifest labels {manifest.labels} do not match the registry's {list(registered.labels)}"
        )
    try:
        stored = json.loads((directory / LABELS_FILE).read_text(encoding="utf-8")).get("labels")
    except (json.JSONDecodeError, AttributeError) as error:
        raise AdapterError(f"{LABELS_FILE} in {directory} is not a label map: {error}") from None
    if stored != manifest.labels:
        raise AdapterError(f"{LABELS_FILE} labels {stored} do not match the manifest's {manifest.labels}")
    logger.warning(
        "adapter in %s was registered before folder digests: its manifest is checked against the registry's "
        "records only (prefixctl verify reports it as legacy)",
        directory,
    )
    return manifest
