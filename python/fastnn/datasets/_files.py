"""Finding, downloading and checking dataset files (shared by every dataset loader).

A dataset is a folder name (``"mnist"``) and a set of files, each with its sha256.
:func:`fetch` finds every file, or downloads the missing ones into the user cache, and
returns their paths; a loader then parses them. Where files are looked for:

1. ``path``, when the caller gives one: every file must be there; nothing is downloaded.
2. ``$FASTNN_DATA/<name>/`` when the environment variable ``FASTNN_DATA`` is set.
3. The user cache ``$XDG_CACHE_HOME/fastnn/<name>/`` (``~/.cache/fastnn/<name>/`` when
   ``XDG_CACHE_HOME`` is unset); files missing from (2) and (3) are downloaded here.

Each file's sha256 is checked once per process (remembered by path, size and
modification time); a file that does not match raises :class:`ChecksumMismatchError`
naming it. Downloads stream into a temporary file next to the target, are checked, and
only then renamed into place with ``os.replace``, so an interrupted or corrupt download
never leaves a partial file under the real name.
"""
from __future__ import annotations

import hashlib
import os
import sys
import threading
from pathlib import Path
from typing import Iterable, Mapping

from .._atomic import atomic_write

__all__ = [
    "DatasetNotFoundError",
    "ChecksumMismatchError",
    "cache_dir",
    "search_dirs",
    "fetch",
    "verify_file",
    "hash_file",
    "sha256_file",
]

#: Environment variable naming a folder that holds one sub-folder per dataset.
DATA_ENV = "FASTNN_DATA"

_CHUNK = 1 << 20
_TIMEOUT_S = 30.0


class DatasetNotFoundError(FileNotFoundError):
    """Dataset files are missing and could not be downloaded; the message says where to put them."""

    def __str__(self) -> str:  # FileNotFoundError would otherwise print "[Errno ...]" forms
        return str(self.args[0]) if self.args else ""


class ChecksumMismatchError(ValueError):
    """A dataset file on disk does not have the expected sha256 (corrupt or a different file)."""


def cache_dir(name: str) -> Path:
    """The user cache folder for dataset ``name``: ``$XDG_CACHE_HOME/fastnn/<name>``.

    ``XDG_CACHE_HOME`` is used only when set to an absolute path (as the XDG spec says);
    otherwise the cache is ``~/.cache/fastnn/<name>``.
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "fastnn" / name


def search_dirs(name: str) -> list[Path]:
    """Folders searched for dataset ``name`` when no explicit path is given, in order."""
    dirs = []
    env = os.environ.get(DATA_ENV, "")
    if env:
        dirs.append(Path(env).expanduser() / name)
    dirs.append(cache_dir(name))
    return dirs


# (resolved path, size, mtime_ns) -> sha256 hex of a file already checked in this process.
_verified: dict[tuple[str, int, int], str] = {}
_verified_lock = threading.Lock()


def _stat_key(path: Path) -> tuple[str, int, int]:
    st = os.stat(path)
    return (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def hash_file(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """The digest (hex) of a file's bytes with a hashlib algorithm, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 (hex) of a file's bytes."""
    return hash_file(path, "sha256")


def verify_file(path: str | os.PathLike, sha256: str) -> None:
    """Check that the file at ``path`` has the given sha256, at most once per process.

    The result is remembered by (resolved path, size, mtime), so a file that changes on
    disk is checked again. Raises :class:`ChecksumMismatchError` naming the file when the
    digest differs.
    """
    path = Path(path)
    key = _stat_key(path)
    with _verified_lock:
        if _verified.get(key) == sha256.lower():
            return
    digest = sha256_file(path)
    if digest != sha256.lower():
        raise ChecksumMismatchError(
            f"dataset file {path} is corrupt or not the expected file: sha256 is {digest}, "
            f"expected {sha256.lower()} (size {key[1]} bytes). Delete it so it can be "
            f"downloaded again, or replace it with a good copy.")
    with _verified_lock:
        _verified[key] = digest


def _open_url(url: str, timeout: float):
    """Open ``url`` for reading (``urllib.request.urlopen``; tests replace this)."""
    import urllib.request  # here, not at the top: it costs ~40 ms of `import fastnn`

    return urllib.request.urlopen(url, timeout=timeout)


def _join_url(base: str, fname: str) -> str:
    return (base if base.endswith("/") else base + "/") + fname


def _download(url: str, dest: Path, digest: str, algorithm: str = "sha256") -> None:
    """Download ``url`` to ``dest`` atomically, checking its digest (hex, of the hashlib
    ``algorithm``) before it lands.

    The bytes stream into a temporary file in ``dest``'s folder that is fsynced and then
    renamed over ``dest``; on any error (network, checksum, interrupt) the temporary file
    is removed and ``dest`` is untouched.
    """
    h = hashlib.new(algorithm)
    with _open_url(url, _TIMEOUT_S) as resp:
        dest.parent.mkdir(parents=True, exist_ok=True)  # only once a mirror answers
        with atomic_write(dest) as out:
            while chunk := resp.read(_CHUNK):
                h.update(chunk)
                out.write(chunk)
            got = h.hexdigest()
            if got != digest.lower():  # raised inside: the partial file is removed
                raise ChecksumMismatchError(
                    f"download from {url} has {algorithm} {got}, expected {digest.lower()}")
    if algorithm == "sha256":
        with _verified_lock:
            _verified[_stat_key(dest)] = got


def _missing_message(name: str, missing: list[str], dirs: list[Path], explicit: bool,
                     errors: list[str]) -> str:
    lines = [f"{name}: missing dataset file(s): {', '.join(missing)}."]
    if explicit:
        lines.append(f"Looked in the folder given as path: {dirs[0]}")
        lines.append(f"Put the files in {dirs[0]}, or call without path= to use "
                     f"${DATA_ENV}/{name} or the cache {cache_dir(name)} (downloaded "
                     f"automatically when online).")
    else:
        lines.append("Looked in: " + "; ".join(str(d) for d in dirs))
        if errors:
            lines.append("Download failed:")
            lines.extend("  " + e for e in errors)
        lines.append(f"Put the files in {cache_dir(name)}, or in <dir>/{name}/ and set "
                     f"{DATA_ENV}=<dir>, or pass path=<folder holding them>.")
    return "\n".join(lines)


def fetch(name: str, files: Mapping[str, str], mirrors: Iterable[str] = (),
          path: str | os.PathLike | None = None, *, download: bool = True,
          verbose: bool = True) -> dict[str, Path]:
    """Find (or download) the files of dataset ``name`` and return ``{file name: path}``.

    Args:
        name: dataset folder name, e.g. ``"mnist"``.
        files: file name -> expected sha256 (hex).
        mirrors: base URLs tried in order for each missing file (``base + file name``).
        path: an explicit folder; when given, every file must be in it (verified), and
            nothing is searched or downloaded elsewhere.
        download: when False, missing files raise instead of being downloaded.
        verbose: print one line to stderr per file downloaded.

    Raises:
        NotADirectoryError: ``path`` is a file, not a folder.
        DatasetNotFoundError: files are missing (and could not be downloaded); the
            message names them, the folders searched, and where to put them.
        ChecksumMismatchError: a file on disk has the wrong sha256.
    """
    if path is not None:
        folder = Path(path).expanduser()
        if folder.is_file():
            raise NotADirectoryError(f"{name}: path must be the folder holding "
                                     f"{', '.join(files)}; {folder} is a file")
        missing = [f for f in files if not (folder / f).is_file()]
        if missing:
            raise DatasetNotFoundError(_missing_message(name, missing, [folder], True, []))
        for f, digest in files.items():
            verify_file(folder / f, digest)
        return {f: folder / f for f in files}

    dirs = search_dirs(name)
    found: dict[str, Path] = {}
    for f in files:
        for d in dirs:
            if (d / f).is_file():
                found[f] = d / f
                break
    missing = [f for f in files if f not in found]
    errors: list[str] = []
    if missing and download:
        target = cache_dir(name)
        unreachable: set[str] = set()  # mirrors that failed below HTTP: not retried
        for f in list(missing):
            for base in mirrors:
                if base in unreachable:
                    continue
                url = _join_url(base, f)
                try:
                    if verbose:
                        print(f"fastnn: downloading {url} -> {target / f}", file=sys.stderr)
                    _download(url, target / f, files[f])
                except (OSError, ValueError) as e:  # URLError/HTTPError/timeouts are OSError
                    import urllib.error

                    if isinstance(e, OSError) and not isinstance(e, urllib.error.HTTPError):
                        unreachable.add(base)  # offline, DNS, refused, timeout, reset
                        errors.append(f"{url}: {e} (mirror not tried again)")
                    else:
                        errors.append(f"{url}: {e}")
                    continue
                found[f] = target / f
                missing.remove(f)
                break
    if missing:
        raise DatasetNotFoundError(_missing_message(name, missing, dirs, False, errors))
    for f, digest in files.items():
        verify_file(found[f], digest)
    return {f: found[f] for f in files}
