"""Where a zoo entry's weights come from: a Hugging Face hub repository (``hub:``) or a plain HTTP(S) URL (``url:``).

Each kind is one small class with the same verbs -- :meth:`fetch` (download into a cache, verify, return the original
file), :meth:`cached` (that file without touching the network), :meth:`describe` (one line) and :meth:`manifest`
(the manifest mapping that names it) -- so the zoo, eval, reproduce, publish and the report never ask which kind an
entry has. An entry with no source has no released weights.

Hub files are found, not guessed. When the manifest's file is marked unverified (``filename_verified: false``), or
is absent at the pinned revision, the repository is listed (``HfApi.list_repo_tree(recursive=True)``) and a file is
chosen by :func:`choose_weights`: a transformers-style repo (``config.json`` beside root weights) gives its root
weights, ``model.safetensors`` before ``pytorch_model.bin``; a repo of many models gives the one weight file whose path
names the entry's architecture (``lrformer-t`` never matches ``lrformer-t-plus``) and dataset. Every hub download is
checked against the manifest's sha256, else the hub's own (the LFS sha256 of the listing, or the metadata ETag of an
LFS file). The resolution -- file, commit and sha256 -- is remembered in ``$LRBENCH_HOME/resolved.json`` so later
runs, offline ones too, use exactly that file; ``lrbench zoo lock`` writes it out as a manifest.

URL files (e.g. mmseg's checkpoints on download.openmmlab.com; ``$LRBENCH_URL_MIRROR`` names a mirror, as
``HF_ENDPOINT`` does for the hub) download into ``$LRBENCH_HOME/downloads`` with
``Range`` resumption of a ``.part`` file that becomes the cached file only once complete and verified: against the
manifest's ``sha256`` when given, else torch.hub's convention that the hex digits after the last ``-`` of the file
name (``..._20210726_101530-8ffa8fda.pth``) are the first digits of its sha256. Connections and reads time out after
:data:`TIMEOUT_S`. ``HF_HUB_OFFLINE=1`` or ``LRBENCH_OFFLINE=1`` serves every kind from the caches only.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

from .datasets import DATASETS
from .errors import ZooError
from .fileio import env_path, write_json
from .version import __version__

TIMEOUT_S = 5.0  # the metadata probe, the listing's answer, a URL's connection and each read
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
HASH_PREFIX = re.compile(r"-([a-f0-9]+)\.")  # torch.hub.HASH_REGEX: <name>-<first hex digits of the sha256>.<ext>
Progress = Callable[[int, int | None], None]  # (bytes done, total bytes or None)


# ----------------------------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------------------------
def lrbench_home() -> Path:
    """``$LRBENCH_HOME``, else ``$XDG_CACHE_HOME/lrbench``, else ``~/.cache/lrbench``."""
    home = env_path("LRBENCH_HOME", "dir", "point it at a writable folder, or unset LRBENCH_HOME", written=True)
    if home is not None:
        return home
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lrbench"


def url_mirror() -> str:
    """``$LRBENCH_URL_MIRROR`` without its trailing slash ('' when unset); anything but an http(s) URL is an error."""
    mirror = os.environ.get("LRBENCH_URL_MIRROR", "").strip().rstrip("/")
    parts = urlsplit(mirror)
    if mirror and (parts.scheme not in ("http", "https") or not parts.netloc):
        raise ZooError(
            f"LRBENCH_URL_MIRROR={mirror}: not an http(s) URL; set it to scheme://host[/prefix] (e.g. "
            f"http://mirror.local/openmmlab), or unset it"
        )
    return mirror


def _truthy(var: str) -> bool:
    return os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")


def offline() -> bool:
    """Caches only: ``HF_HUB_OFFLINE`` (huggingface_hub's switch) or ``LRBENCH_OFFLINE`` (``lrbench --offline``)."""
    return _truthy("HF_HUB_OFFLINE") or _truthy("LRBENCH_OFFLINE")


def _offline_why() -> str:
    return "HF_HUB_OFFLINE is set" if _truthy("HF_HUB_OFFLINE") else "offline mode is on (LRBENCH_OFFLINE)"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def is_sha256(value: object) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) is not None


@dataclass(frozen=True)
class Want:
    """What a file must be: the zoo entry it is for (named in messages), its architecture and dataset."""

    entry: str
    arch: str
    dataset: str
    known_archs: tuple[str, ...] = ()  # every registered architecture: a longer name is another model


@dataclass(frozen=True)
class Fetched:
    """An original weights file on disk, its sha256 and the source that pins exactly it."""

    path: str
    sha256: str
    verified: bool  # checked against a sha256 known before the download (manifest, hub, file-name prefix)
    pin: HubSource | UrlSource  # the same file, pinned: commit for the hub, sha256 for both
    chosen: str | None = None  # a line saying which file a listing chose, when one did


# ----------------------------------------------------------------------------------------------------------------
# Choosing a file in a repository listing
# ----------------------------------------------------------------------------------------------------------------
def _words(text: str) -> str:
    """Lower-case, '+' spelled 'plus', every run of other characters one '-', with '-' at both ends."""
    return "-" + re.sub(r"[^a-z0-9]+", "-", text.lower().replace("+", "-plus")).strip("-") + "-"


def names_arch(path: str, arch: str, known_archs: Iterable[str] = ()) -> bool:
    """Whether ``path`` names ``arch`` as a whole word that is not the start of a longer registered architecture
    (``lrformer-t-plus-160k_ade20k.pth`` names lrformer-t-plus, not lrformer-t)."""
    text, own = _words(path), _words(arch)
    longer = [_words(a) for a in known_archs if a != arch and _words(a).startswith(own)]
    starts = [m.start() for m in re.finditer(re.escape(own), text)]
    return any(not any(text.startswith(b, i) for b in longer) for i in starts)


def names_dataset(path: str, dataset: str) -> bool:
    return re.search(DATASETS[dataset].file_words, _words(path)) is not None


def choose_weights(paths: list[str], want: Want, hint: str | None, where: str) -> str:
    """The one weight file of a repository listing for ``want`` (see the module docstring); ``hint`` is the
    manifest's file name, which wins when it is there or moved to another folder. Raises one line otherwise."""
    root = {p for p in paths if "/" not in p}
    if "config.json" in root and root & {"model.safetensors", "pytorch_model.bin"}:  # one transformers model
        return "model.safetensors" if "model.safetensors" in root else "pytorch_model.bin"
    weights = sorted(p for p in paths if p.lower().endswith(WEIGHT_SUFFIXES))
    if hint in weights:
        return hint
    moved = [p for p in weights if hint and p.rsplit("/", 1)[-1] == hint.rsplit("/", 1)[-1]]
    if len(moved) == 1:
        return moved[0]
    found = moved or [
        p for p in weights if names_arch(p, want.arch, want.known_archs) and names_dataset(p, want.dataset)
    ]
    if len(found) == 1:
        return found[0]
    pick = (
        f"pick one with `lrbench zoo pull {want.entry} --filename FILE`, or pin it in a local manifest ($LRBENCH_ZOO)"
    )
    if found:
        raise ZooError(f"{want.entry}: {len(found)} files in {where} fit equally well ({', '.join(found)}); {pick}")
    shown = ", ".join(weights[:6]) + (", ..." if len(weights) > 6 else "") if weights else "none"
    raise ZooError(
        f"{want.entry}: no weight file in {where} names {want.arch} and {want.dataset} (weight files: {shown}); {pick}"
    )


# ----------------------------------------------------------------------------------------------------------------
# The Hugging Face hub
# ----------------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _hub_quiet():
    """huggingface_hub's log level at ERROR for the duration of a call, then the caller's level again (never
    changed for the rest of the process)."""
    from huggingface_hub.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)


def _endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def hf_cache_dir() -> str | None:
    # Read at call time (huggingface_hub reads these once at import); checked as lrbench's own home is.
    for var in ("HF_HUB_CACHE", "HF_HOME"):
        path = env_path(var, "dir", f"point it at a writable folder, or unset {var}", written=True)
        if path is not None:
            return str(path if var == "HF_HUB_CACHE" else path / "hub")
    return None


def remove_cached(path: str) -> None:
    """Remove a downloaded file: for the HF cache, the snapshot link and the blob it points to."""
    p = Path(path)
    blob = p.resolve()
    p.unlink(missing_ok=True)
    blob.unlink(missing_ok=True)


def _not_found(cause: BaseException) -> bool:
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    missing = (EntryNotFoundError, RevisionNotFoundError, RepositoryNotFoundError)
    return isinstance(cause, missing) and not isinstance(cause, LocalEntryNotFoundError)


def _hub_failure(entry: str, where: str, cause: BaseException, probing: bool = False) -> ZooError:
    """The one line for a hub request that failed, from huggingface_hub's root cause (``probing``: the first
    request, where a network error means the hub cannot be reached at all)."""
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    if _not_found(cause):
        return ZooError(
            f"{entry}: {where} does not exist on the hub ({type(cause).__name__}); set the right "
            f"file with --repo-id/--filename/--revision or in a local manifest ($LRBENCH_ZOO)"
        )
    if isinstance(cause, HfHubHTTPError) and getattr(cause, "response", None) is not None:
        return ZooError(
            f"{entry}: the hub at {_endpoint() or 'huggingface.co'} answered "
            f"HTTP {cause.response.status_code} for {where}; try again later, or check HF_ENDPOINT "
            f"and your token"
        )
    unreachable = probing and (
        isinstance(cause, OSError)
        or any(c.__name__ in ("TransportError", "TimeoutException") for c in type(cause).__mro__)
    )  # httpx's network errors
    if isinstance(cause, LocalEntryNotFoundError) or offline() or unreachable:
        why = _offline_why() if offline() else "the hub cannot be reached"
        return ZooError(
            f"{entry}: {where} is not in the cache and {why}; connect and run "
            f"`lrbench zoo pull {entry}`, or pass a local file with --checkpoint"
        )
    text = str(cause).strip().splitlines()
    return ZooError(
        f"{entry}: cannot download {where} ({type(cause).__name__}: {text[0] if text else ''}); "
        f"pull again (a partial download is resumed), or pass a local file with --checkpoint"
    )


@dataclass(frozen=True)
class HubSource:
    """A file in a hub repository; ``filename`` None (or unverified) means "find it by listing the repository"."""

    repo_id: str
    filename: str | None = None
    revision: str = "main"
    sha256: str | None = None
    filename_verified: bool = False
    kind: ClassVar[str] = "hub"

    def describe(self) -> str:
        guessed = "" if self.filename_verified or self.filename is None else " (file name unverified)"
        return f"hub {self.repo_id}/{self.filename or '<found by listing>'}@{self.revision}{guessed}"

    def manifest(self) -> dict:
        return {"hub": asdict(self)}

    def _where(self) -> str:
        return f"{self.repo_id}/{self.filename}@{self.revision}"

    def cached(self) -> str | None:
        from huggingface_hub import try_to_load_from_cache

        if self.filename is None:
            return None
        hit = try_to_load_from_cache(self.repo_id, self.filename, cache_dir=hf_cache_dir(), revision=self.revision)
        return hit if isinstance(hit, str) else None

    def _metadata(self, entry: str):
        """The file's hub metadata (one request, short timeout, no retries); None when the file is absent at the
        revision, "cached" when the hub fails but the cache can stand in."""
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        try:
            return get_hf_file_metadata(
                hf_hub_url(self.repo_id, self.filename, revision=self.revision, endpoint=_endpoint()),
                timeout=TIMEOUT_S,
                endpoint=_endpoint(),
            )
        except Exception as e:  # noqa: BLE001 - any failure: the cache may still serve it, else one clear line
            from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

            if _not_found(e) and not isinstance(e, (RepositoryNotFoundError, RevisionNotFoundError)):
                return None
            if self.cached():
                return "cached"
            raise _hub_failure(entry, self._where(), e, probing=True) from None

    def _listing(self, entry: str) -> dict[str, str | None]:
        """path -> LFS sha256 (None for a regular git file) of every file at the revision."""
        from huggingface_hub import HfApi
        from huggingface_hub.hf_api import RepoFile

        where = f"{self.repo_id}@{self.revision}"
        try:
            tree = HfApi(endpoint=_endpoint()).list_repo_tree(self.repo_id, revision=self.revision, recursive=True)
            return {f.path: (f.lfs.sha256 if f.lfs else None) for f in tree if isinstance(f, RepoFile)}
        except Exception as e:  # noqa: BLE001
            raise _hub_failure(entry, where, e, probing=True) from None

    def _download(self, entry: str, force: bool) -> str:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            return hf_hub_download(
                self.repo_id,
                self.filename,
                revision=self.revision,
                cache_dir=hf_cache_dir(),
                force_download=force,
                local_files_only=offline(),
                etag_timeout=TIMEOUT_S,
                endpoint=_endpoint(),
            )
        except Exception as e:  # noqa: BLE001 - huggingface_hub wraps the failed call as the cause of its own error
            cause = e.__cause__ if isinstance(e, (LocalEntryNotFoundError, ValueError)) and e.__cause__ else e
            raise _hub_failure(entry, self._where(), cause) from None

    def fetch(self, want: Want, force: bool = False, progress: Progress | None = None) -> Fetched:
        """Resolve (list when needed), pin to the commit, download into the HF cache and verify."""
        with _hub_quiet():  # its retry warnings are not for the user: a failure ends in one line
            return self._fetch(want, force)

    def _fetch(self, want: Want, force: bool) -> Fetched:
        target, expected, chosen = self, self.sha256, None
        if not offline():
            # The metadata request first: it fails in seconds when the hub is unreachable (the listing retries).
            meta = self._metadata(want.entry) if self.filename else None
            if meta != "cached" and (meta is None or not self.filename_verified):  # find it in the listing
                files = self._listing(want.entry)
                where = f"{self.repo_id}@{self.revision}"
                name = choose_weights(sorted(files), want, self.filename, where)
                if name != self.filename:
                    chosen = f"chose {name} in {where} (the manifest names {self.filename or 'no file'})"
                    meta = None
                target = replace(self, filename=name, filename_verified=True)
                expected = expected or files.get(name)
                meta = meta or target._metadata(want.entry)
                if meta is None:
                    raise ZooError(f"{want.entry}: {target._where()} is listed but cannot be downloaded; pull again")
            if meta != "cached":
                etag = (meta.etag or "").strip('"')
                expected = expected or (etag if is_sha256(etag) else None)  # an LFS file's ETag is its sha256
                target = replace(target, revision=meta.commit_hash or target.revision)
        elif self.filename is None:
            raise ZooError(
                f"{want.entry}: the file in {self.repo_id} is found by listing the repository, and {_offline_why()}; "
                f"connect once and run `lrbench zoo pull {want.entry}`"
            )
        path = target._download(want.entry, force)
        digest = sha256_file(path)
        if expected and digest != expected:
            remove_cached(path)
            raise ZooError(
                f"{want.entry}: checksum mismatch for {target.repo_id}/{target.filename}: expected {expected}, got "
                f"{digest}; the file was removed from the cache. Pull again, or fix sha256 in the manifest"
            )
        pin = replace(target, sha256=digest, filename_verified=True)
        return Fetched(path, digest, expected is not None, pin, chosen)


# ----------------------------------------------------------------------------------------------------------------
# Plain URLs
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UrlSource:
    """A file at an HTTP(S) URL, checked by ``sha256`` or by the hash prefix in its file name."""

    url: str
    sha256: str | None = None
    kind: ClassVar[str] = "url"

    @property
    def filename(self) -> str:
        return urlsplit(self.url).path.rsplit("/", 1)[-1]

    @property
    def hash_prefix(self) -> str | None:
        m = HASH_PREFIX.search(self.filename)
        return m.group(1) if m and len(m.group(1)) >= 8 else None

    def describe(self) -> str:
        return f"url {self.url}"

    def download_url(self) -> str:
        """The URL actually requested: ``$LRBENCH_URL_MIRROR`` (``scheme://host[/prefix]``) replaces the scheme and
        host of every URL entry when set, as ``HF_ENDPOINT`` does for the hub."""
        mirror = url_mirror()
        parts = urlsplit(self.url)
        return f"{mirror}{parts.path}" + (f"?{parts.query}" if parts.query else "") if mirror else self.url

    def manifest(self) -> dict:
        return {"url": {"url": self.url, "sha256": self.sha256}}

    def cache_path(self) -> Path:
        parts = urlsplit(self.url)
        safe = [p for p in parts.path.split("/") if p not in ("", ".", "..")]
        return lrbench_home() / "downloads" / re.sub(r"[^\w.-]", "_", parts.netloc) / Path(*safe)

    def cached(self) -> str | None:
        p = self.cache_path()
        return str(p) if p.is_file() else None

    def _check(self, want: Want, path: Path, digest: str) -> None:
        """Raise (after deleting ``path``) when ``digest`` contradicts the sha256 or the file name's prefix."""
        if self.sha256 and digest != self.sha256:
            expected = f"expected {self.sha256}"
        elif not self.sha256 and self.hash_prefix and not digest.startswith(self.hash_prefix):
            expected = f"expected a sha256 starting {self.hash_prefix} (the file name's hash prefix)"
        else:
            return
        path.unlink(missing_ok=True)
        raise ZooError(
            f"{want.entry}: checksum mismatch for {self.url}: {expected}, got {digest}; the download was deleted. "
            f"Pull again, or fix the url/sha256 in the manifest"
        )

    def fetch(self, want: Want, force: bool = False, progress: Progress | None = None) -> Fetched:
        dest = self.cache_path()
        if force:
            dest.unlink(missing_ok=True)
        if not dest.is_file():
            if offline():
                raise ZooError(
                    f"{want.entry}: {self.url} is not in the cache and {_offline_why()}; connect and run "
                    f"`lrbench zoo pull {want.entry}`, or pass a local file with --checkpoint"
                )
            part = dest.with_name(dest.name + ".part")
            _http_download(want.entry, self.download_url(), part, progress)
            digest = sha256_file(part)
            self._check(want, part, digest)
            os.replace(part, dest)  # only a complete, verified file ever has the cached name
        else:
            digest = sha256_file(dest)
            self._check(want, dest, digest)
        return Fetched(str(dest), digest, bool(self.sha256 or self.hash_prefix), replace(self, sha256=digest))


def _http_download(entry: str, url: str, part: Path, progress: Progress | None) -> None:
    """Download ``url`` into ``part``, continuing a partial file with a Range request."""
    part.parent.mkdir(parents=True, exist_ok=True)
    start = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": f"lrbench/{__version__}"} | ({"Range": f"bytes={start}-"} if start else {})
    host = urlsplit(url).netloc
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:  # the part is already whole (or longer than the file): start again
            part.unlink()
            return _http_download(entry, url, part, progress)
        raise ZooError(f"{entry}: {host} answered HTTP {e.code} for {url}; check the url, or try again later") from None
    except (urllib.error.URLError, OSError) as e:
        why = getattr(e, "reason", e)
        raise ZooError(
            f"{entry}: cannot reach {host} ({why}); check your connection, or pass a local file with --checkpoint"
        ) from None
    with resp:
        if start and resp.status != 206:  # the server ignored the Range: the body is the whole file
            start = 0
        length = resp.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        done = start
        try:
            with open(part, "ab" if start else "wb") as f:
                while block := resp.read(1 << 20):
                    f.write(block)
                    done += len(block)
                    if progress:
                        progress(done, total)
        except (OSError, http.client.HTTPException) as e:  # a read timeout, a connection closed early
            raise ZooError(
                f"{entry}: the download of {url} was cut short at {done} bytes ({type(e).__name__}); pull again to "
                f"continue it"
            ) from None
    if total is not None and done < total:
        raise ZooError(
            f"{entry}: the download of {url} was cut short at {done} of {total} bytes; pull again to continue"
        )


# ----------------------------------------------------------------------------------------------------------------
# The manifest form, and the remembered resolutions
# ----------------------------------------------------------------------------------------------------------------
Source = HubSource | UrlSource
_HUB_KEYS = {f.name for f in HubSource.__dataclass_fields__.values()}
_URL_KEYS = {"url", "sha256"}


def parse_source(raw: dict) -> Source | None:
    """The source of a manifest entry (its ``hub:`` or ``url:`` mapping, or neither); raises ValueError with the
    reason, which the manifest reader prefixes with the file and entry."""
    hub, url = raw.get("hub"), raw.get("url")
    if hub is not None and url is not None:
        raise ValueError("give either hub or url, not both")
    if hub is not None:
        if not isinstance(hub, dict) or "repo_id" not in hub or set(hub) - _HUB_KEYS:
            raise ValueError(
                f"hub must be null or a mapping with repo_id and optionally "
                f"{', '.join(sorted(_HUB_KEYS - {'repo_id'}))}"
            )
        src: Source = HubSource(**{k: v for k, v in hub.items() if v is not None})
    elif url is not None:
        if isinstance(url, str):
            url = {"url": url}
        if not isinstance(url, dict) or "url" not in url or set(url) - _URL_KEYS:
            raise ValueError("url must be an http(s) URL or a mapping with url and optionally sha256")
        if urlsplit(str(url["url"])).scheme not in ("http", "https"):
            raise ValueError(f"url must start with https:// (or http://), got '{url['url']}'")
        src = UrlSource(str(url["url"]), url.get("sha256"))
    else:
        return None
    if src.sha256 is not None and not is_sha256(str(src.sha256)):
        raise ValueError(f"{src.kind}.sha256 must be 64 lower-case hex digits or null")
    return src


def _store() -> Path:
    return lrbench_home() / "resolved.json"


def _read_store() -> dict:
    """The remembered resolutions ({} before the first pull). A store that exists but cannot be read is an error:
    ignoring it would quietly un-pin every entry."""
    path = _store()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ZooError(
            f"{path}: the remembered weight resolutions cannot be read ({type(e).__name__}); restore it, or delete "
            f"it to forget them (the next pulls pin again)"
        ) from None
    if not isinstance(data, dict):
        raise ZooError(f"{path}: not a mapping of zoo entries; restore it, or delete it to forget the pins")
    return data


def remembered(entry: str, source: Source) -> Source | None:
    """The pinned source a previous pull resolved ``entry`` to, while the manifest still names ``source``."""
    rec = _read_store().get(entry)
    if not isinstance(rec, dict) or rec.get("manifest") != source.manifest():
        return None
    try:
        return parse_source(rec["pin"])
    except (KeyError, TypeError, ValueError):
        return None


def remember(entry: str, source: Source, pin: Source) -> None:
    data = _read_store()
    data[entry] = {"manifest": source.manifest(), "pin": pin.manifest()}
    write_json(_store(), dict(sorted(data.items())))


__all__ = [
    "Fetched",
    "HubSource",
    "Source",
    "UrlSource",
    "Want",
    "choose_weights",
    "lrbench_home",
    "offline",
    "parse_source",
    "remember",
    "remove_cached",
    "remembered",
    "sha256_file",
]
