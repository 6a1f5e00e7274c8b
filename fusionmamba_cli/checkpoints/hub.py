"""Weights on the Hugging Face Hub: downloads into the hub's own cache, lookups in that cache.

The network side is all `huggingface_hub`'s: `hf_hub_download`, its cache (`HF_HUB_CACHE`), `HF_ENDPOINT`,
`HF_HUB_OFFLINE` and its token handling (`HF_TOKEN`, `hf auth login`). What this module adds: names, repository
id and sha256 from the manifest, safetensors only, verification of every file before it is used or reported
as installed (a downloaded file that does not match is deleted), a short metadata timeout so that no network
means an error within seconds, and one-line errors of our own types.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fusionmamba_cli.checkpoints.manifest import (
    Manifest,
    WeightsEntry,
    bundled_weights_dir,
    load_manifest,
    sha256_of,
    verify_file,
)
from fusionmamba_cli.errors import WeightsDownloadError, WeightsFormatError, WeightsNotFoundError

# Seconds to wait for the Hub's answer to the metadata request when HF_HUB_ETAG_TIMEOUT is unset.
ETAG_TIMEOUT = 5.0


@dataclass(frozen=True)
class FetchedWeights:
    """One result of `fetch_weights`: `status` is `bundled`, `cached` (no traffic) or `downloaded`."""

    name: str
    path: Path
    status: str


@dataclass(frozen=True)
class WeightsLocation:
    """Where a manifest entry is available: `bundled`, `cached`, `remote-only`, `missing` or `corrupt`."""

    entry: WeightsEntry
    where: str
    path: Path | None = None


def _repo_id(entry: WeightsEntry, repo_id: str | None, manifest: Manifest | None = None) -> str | None:
    """Argument > the entry's own `repo_id` (manifest extra) > the manifest's `repo_id`."""
    return repo_id or entry.extra.get("repo_id") or (manifest or load_manifest()).repo_id or None


def _revision(entry: WeightsEntry, revision: str | None) -> str | None:
    """Argument > the entry's own `revision` (manifest extra) > None (the hub's default branch)."""
    return revision or entry.extra.get("revision") or None


def _matches(path: Path, entry: WeightsEntry) -> bool:
    return sha256_of(path) == entry.sha256


def _delete_cached(path: Path) -> None:
    """Remove a cached file: the snapshot entry and the blob it points to."""
    for victim in {path.resolve(), path}:
        try:
            victim.unlink()
        except FileNotFoundError:
            pass


def _cached_pointer(repo_id: str, filename: str, revision: str | None, cache_dir: str | os.PathLike | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


def _other_revisions(repo_id: str, entry: WeightsEntry, cache_dir: str | os.PathLike | None) -> Path | None:
    """A cached copy of the file at any revision whose sha256 is the manifest's (e.g. one fetched with --revision)."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    snapshots = Path(cache_dir or constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model") / "snapshots"
    for candidate in sorted(snapshots.glob(f"*/{entry.file}")):
        if not candidate.is_file() or (entry.size and candidate.stat().st_size != entry.size):
            continue
        if _matches(candidate, entry):
            return candidate
    return None


def _lookup(entry: WeightsEntry, repo_id: str, revision: str | None, cache_dir, *, explicit_revision: bool) -> tuple[Path | None, Path | None]:
    """(verified cached file or None, cached file at `revision` that does not match or None)."""
    pointer = _cached_pointer(repo_id, entry.file, _revision(entry, revision), cache_dir)
    if pointer is not None and _matches(pointer, entry):
        return pointer, None
    other = None if explicit_revision else _other_revisions(repo_id, entry, cache_dir)
    return other, pointer


def find_cached(
    entry: WeightsEntry,
    cache_dir: str | os.PathLike | None = None,
    revision: str | None = None,
    *,
    repo_id: str | None = None,
) -> Path | None:
    """The cached file for `entry` whose sha256 is the manifest's, or None. No network.

    Looks at `revision` (default: the entry's manifest `revision`, else the default branch); without an
    explicit `revision`, a copy cached at another revision counts too. A cached file that does not match
    is not used (nor deleted: it may be another entry's version of the same file name).
    """
    repo = _repo_id(entry, repo_id)
    if not repo:
        return None
    verified, _ = _lookup(entry, repo, revision, cache_dir, explicit_revision=revision is not None)
    return verified


def locate(entry: WeightsEntry, cache_dir: str | os.PathLike | None = None) -> WeightsLocation:
    """Where `entry` can be used from, every local file checked against the manifest's sha256. No network."""
    bundled = bundled_weights_dir() / entry.file
    if bundled.is_file():
        return WeightsLocation(entry, "bundled" if _matches(bundled, entry) else "corrupt", bundled)
    cached = find_cached(entry, cache_dir)
    if cached is not None:
        return WeightsLocation(entry, "cached", cached)
    return WeightsLocation(entry, "remote-only" if _repo_id(entry, None) else "missing")


def _etag_timeout() -> float:
    """HF_HUB_ETAG_TIMEOUT when the user set it, else our short default."""
    from huggingface_hub import constants

    configured = getattr(constants, "HF_HUB_ETAG_TIMEOUT", None)
    default = getattr(constants, "DEFAULT_ETAG_TIMEOUT", None)
    return float(configured) if configured is not None and configured != default else ETAG_TIMEOUT


def _network_errors() -> tuple[type[BaseException], ...]:
    """Connection-level exception types of whichever HTTP library huggingface_hub uses (httpx2, httpx, requests)."""
    types: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"), ("requests", "ConnectionError"), ("requests", "Timeout")):
        found = getattr(sys.modules.get(module), name, None)
        if isinstance(found, type):
            types.append(found)
    return tuple(types)


def _translate(exc: BaseException, entry: WeightsEntry, repo_id: str, revision: str | None) -> Exception | None:
    """Our one-line error for a huggingface_hub failure, or None for an unexpected one (re-raised as is)."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        EntryNotFoundError,
        FileMetadataError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id}@{revision or 'main'}"
    endpoint = constants.ENDPOINT
    if isinstance(exc, OfflineModeIsEnabled):
        return WeightsDownloadError(
            f"{entry.name!r} is not in the download cache and Hugging Face offline mode is on (HF_HUB_OFFLINE); "
            "unset it to download"
        )
    if isinstance(exc, RepositoryNotFoundError):
        return WeightsNotFoundError(
            f"repository {repo_id!r} not found on {endpoint} (private or gated repositories need a token: "
            "`hf auth login` or HF_TOKEN)"
        )
    if isinstance(exc, RevisionNotFoundError):
        return WeightsNotFoundError(f"revision {revision!r} not found in {repo_id} on {endpoint}")
    if isinstance(exc, EntryNotFoundError) and not isinstance(exc, LocalEntryNotFoundError):
        return WeightsNotFoundError(f"{entry.file} not found in {where} on {endpoint}")
    if isinstance(exc, FileMetadataError):
        return WeightsDownloadError(f"{endpoint} does not answer like a Hugging Face Hub (check HF_ENDPOINT)")
    if isinstance(exc, HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", "?")
        return WeightsDownloadError(f"{endpoint} answered HTTP {status} for {entry.file} of {where}; try again later")
    if isinstance(exc, _network_errors()) or isinstance(exc, LocalEntryNotFoundError):
        return WeightsDownloadError(
            f"cannot reach {endpoint} to download {entry.name!r} ({exc.__class__.__name__}); "
            "bundled and already downloaded weights still work (see `fusionmamba weights list`)"
        )
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, ValueError) and cause is not None:  # force_download wraps the metadata error
        return _translate(cause, entry, repo_id, revision)
    return None


@contextmanager
def _hub_errors(entry: WeightsEntry, repo_id: str, revision: str | None):
    """Turn huggingface_hub's failures into our one-line errors (unexpected ones pass through)."""
    try:
        yield
    except Exception as exc:
        ours = _translate(exc, entry, repo_id, revision)
        if ours is None:
            raise
        raise ours from None


def _download_one(
    entry: WeightsEntry, manifest: Manifest, *, repo_id: str | None, revision: str | None, cache_dir, force: bool
) -> FetchedWeights:
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    if not entry.file.endswith(".safetensors"):
        raise WeightsFormatError(
            f"{entry.name!r}: only .safetensors files are downloaded from the Hub, the manifest names {entry.file!r}"
        )
    bundled = bundled_weights_dir() / entry.file
    if not force and bundled.is_file():
        return FetchedWeights(entry.name, verify_file(bundled, entry), "bundled")
    repo = _repo_id(entry, repo_id, manifest)
    if not repo:
        raise WeightsNotFoundError(
            f"{entry.name!r}: no Hub repository is known (the manifest has no repo_id); pass --repo-id ORG/NAME"
        )
    rev = _revision(entry, revision)
    if not force:
        verified, stale = _lookup(entry, repo, revision, cache_dir, explicit_revision=revision is not None)
        if verified is not None:
            return FetchedWeights(entry.name, verified, "cached")  # already downloaded and verified: no traffic
        force = stale is not None  # a damaged or outdated copy at this revision: fetch it again
    timeout = _etag_timeout()
    # hf_hub_download retries a failed metadata request with backoff and a 60 s timeout before giving up;
    # one un-retried metadata request first makes "no network" fail within `timeout` seconds.
    with _hub_errors(entry, repo, rev):
        get_hf_file_metadata(hf_hub_url(repo, entry.file, revision=rev), timeout=timeout)
        path = Path(
            hf_hub_download(repo, entry.file, revision=rev, cache_dir=cache_dir, force_download=force, etag_timeout=timeout)
        )
    actual = sha256_of(path)
    if actual != entry.sha256:
        _delete_cached(path)
        raise WeightsFormatError(
            f"{entry.name!r}: the downloaded {entry.file} from {repo}@{rev or 'main'} has sha256 {actual[:12]}..., "
            f"the manifest says {entry.sha256[:12]}...; the file was deleted"
        )
    return FetchedWeights(entry.name, path, "downloaded")


def default_download_names(*, all_entries: bool = False) -> list[str]:
    """What `download-weights` fetches without names: every entry not bundled here (`all_entries`), else the
    general and per-task defaults."""
    manifest = load_manifest()
    if all_entries:
        return [name for name, entry in manifest.entries.items() if not (bundled_weights_dir() / entry.file).is_file()]
    names = [manifest.default, *manifest.task_defaults.values()]
    return list(dict.fromkeys(name for name in names if name))


def manifest_entries(names: list[str] | tuple[str, ...], manifest: Manifest | None = None) -> list[WeightsEntry]:
    """The manifest entries of `names`; `WeightsNotFoundError` naming the known ones for an unknown name."""
    manifest = manifest or load_manifest()
    unknown = [name for name in names if name not in manifest.entries]
    if unknown:
        known = ", ".join(sorted(manifest.entries)) or "none: no weights/manifest.json"
        raise WeightsNotFoundError(f"unknown weights name {unknown[0]!r} (known: {known})")
    return [manifest.entries[name] for name in names]


def fetch_weights(
    names: list[str] | tuple[str, ...],
    *,
    repo_id: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    force: bool = False,
) -> list[FetchedWeights]:
    """`download_weights` that also says, per name, whether the file was bundled, cached or downloaded."""
    manifest = load_manifest()
    entries = manifest_entries(names, manifest)
    cache_dir = os.fspath(cache_dir) if cache_dir is not None else None
    return [
        _download_one(entry, manifest, repo_id=repo_id, revision=revision, cache_dir=cache_dir, force=force)
        for entry in entries
    ]


def download_weights(
    names: list[str] | tuple[str, ...],
    *,
    repo_id: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    force: bool = False,
) -> list[Path]:
    """Fetch named weights into the Hugging Face cache and verify them; their local paths, in `names` order.

    Names and sha256 come from the manifest (`weights/manifest.json`); the repository is `repo_id`, else the
    entry's or the manifest's; the revision is `revision`, else the entry's, else the default branch.
    Bundled files and verified cached ones are returned without network traffic unless `force`.
    Raises `WeightsNotFoundError` (unknown name, repository, revision or file), `WeightsFormatError` (not
    safetensors; a sha256 mismatch, after deleting the file) and `WeightsDownloadError` (no network,
    HF_HUB_OFFLINE, server errors), each with a one-line message.
    """
    fetched = fetch_weights(names, repo_id=repo_id, revision=revision, cache_dir=cache_dir, force=force)
    return [item.path for item in fetched]


__all__ = [
    "FetchedWeights",
    "WeightsLocation",
    "default_download_names",
    "download_weights",
    "fetch_weights",
    "find_cached",
    "locate",
    "manifest_entries",
]
