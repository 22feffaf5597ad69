"""Downloading checkpoints: resumable, verified, with a fallback list of URLs.

A download streams into ``<dest>/<filename>.partial``. An interrupted download
(a dropped connection, a timeout, Ctrl-C) leaves that file behind and the next
call resumes it with an HTTP ``Range`` request, from whichever URL answers:
the checksum over the complete file catches a mix of different copies. Only a
verified file is renamed (atomically) to ``<dest>/<filename>``, so a file
under the final name is always complete.

Only the standard library speaks HTTP here (``urllib.request``, which honours
the usual ``https_proxy``/``http_proxy`` variables); ``rich`` draws the bar.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from livepuppet import __version__, outputs
from livepuppet.errors import DownloadError
from livepuppet.paths import PARTIAL_SUFFIX, checkpoint_dir, find_checkpoint
from livepuppet.hub import connection
from livepuppet.hub.registry import ModelEntry, registry_path

CHUNK_SIZE = 256 * 1024
MAX_UNKNOWN_SIZE = 2 << 30  # bytes, when the registry does not know the file's size (FOMM files are ~0.7 GB)
STALL_BYTES = 16 * 1024  # a connection bringing less than this per timeout window has stalled
DEADLINE = 3 * 3600.0  # seconds for a whole download
_DEADLINE = "the download took longer than its deadline"
_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$", re.IGNORECASE)


class _UrlFailed(Exception):
    """One URL did not deliver the file; the message says why, in a few words."""


class _StartOver(Exception):
    """The server's answer does not fit the partial file; download from zero."""


def ensure_checkpoint(entry: ModelEntry, *, progress: bool = True, timeout: float = 30) -> Path:
    """The entry's checkpoint in the checkpoint folder, downloaded first if absent."""
    found = find_checkpoint(entry)
    if found is not None:
        return found
    return download(entry, progress=progress, timeout=timeout)


def download(
    entry: ModelEntry,
    dest_dir: Path | None = None,
    *,
    progress: bool = True,
    timeout: float = 30,
    deadline: float = DEADLINE,
) -> Path:
    """Download ``entry`` into ``dest_dir`` (default: the checkpoint folder).

    Returns ``dest_dir/<filename>``; when a non-empty file is already there it
    is returned as is. URLs are tried in order; a failing one is reported on one
    console line and the next is tried. The complete file must match the
    entry's md5 and sha256 (those that are known). Raises :class:`DownloadError`
    on a checksum mismatch (nothing is kept) or when every URL failed (the
    message says where to get the file by hand and where to put it).
    ``timeout`` bounds each connection attempt and each read, in seconds, and is the stall window
    (under STALL_BYTES in it fails the URL); ``deadline`` bounds the whole download. The server may send
    no more than the registry's size (2 GiB when unknown). One download per folder runs at a time.
    """
    folder = (Path(dest_dir) if dest_dir is not None else checkpoint_dir()).absolute()
    final = folder / entry.filename
    if find_checkpoint(entry, folder) is not None:
        return final
    for written in (final, folder / (entry.filename + PARTIAL_SUFFIX)):  # the registry is read, never written
        outputs.check(written, [registry_path()[0]])
    if not entry.urls:
        raise DownloadError(
            f"no download URL is known for model {entry.name!r}.\n" + _by_hand(entry, folder) + "."
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create the folder {folder}: {_os_reason(exc)}") from None

    console = Console(stderr=True, highlight=False)
    with _folder_lock(folder, entry, console):
        if find_checkpoint(entry, folder) is not None:  # another run finished it meanwhile
            return final
        return _download_locked(entry, folder, progress=progress, timeout=timeout, deadline=deadline,
                                console=console)


@contextlib.contextmanager
def _folder_lock(folder: Path, entry: ModelEntry, console: Console) -> Iterator[None]:
    """One download per checkpoint folder at a time: a second run waits, then finds the finished file.

    The folder itself is locked (flock on its descriptor), so no lock file is left behind.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no flock
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            console.print(f"another livepuppet is downloading into {folder}; waiting for it to finish "
                          f"(Ctrl-C to stop)", markup=False, soft_wrap=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _download_locked(entry: ModelEntry, folder: Path, *, progress: bool, timeout: float, deadline: float,
                     console: Console) -> Path:
    final = folder / entry.filename
    partial = folder / (entry.filename + PARTIAL_SUFFIX)
    limits = _Limits(timeout, time.monotonic() + deadline, entry.size or MAX_UNKNOWN_SIZE)
    failures: list[tuple[str, str]] = []
    started_over = False
    index = 0
    while index < len(entry.urls):
        url = entry.urls[index]
        resumed_from = _size(partial)
        try:
            _fetch(url, partial, entry, limits=limits, show=progress, console=console)
        except _UrlFailed as exc:
            reason = str(exc)
            failures.append((url, reason))
            index += 1
            tail = "; trying the next URL" if index < len(entry.urls) else ""
            console.print(
                f"could not download from {url}: {reason}{tail}", style="yellow", markup=False, soft_wrap=True
            )
            continue

        mismatch = _verify(partial, entry, console=console if progress else None)
        if mismatch is None:
            try:
                os.replace(partial, final)
            except OSError as exc:
                raise DownloadError(f"cannot move {partial} to {final}: {_os_reason(exc)}") from None
            return final

        _remove(partial)
        if resumed_from > 0 and not started_over:
            # The earlier part may come from another copy of the file: try once from zero.
            started_over = True
            console.print(
                f"checksum mismatch after resuming a partial download; downloading {entry.filename} again from zero",
                style="yellow",
                markup=False,
                soft_wrap=True,
            )
            continue
        raise DownloadError(
            f"the checksum of {entry.filename} downloaded from {url} did not match "
            f"({mismatch}); the file was deleted and nothing was kept"
        )

    raise DownloadError(_all_failed(entry, folder, failures, _size(partial)))


# --------------------------------------------------------------------------
# one URL


def _fetch(url: str, partial: Path, entry: ModelEntry, *, limits: _Limits, show: bool, console: Console) -> None:
    """Bring ``partial`` to the complete file from ``url``, resuming when it exists.

    Returns when the server says the file is complete; raises :class:`_UrlFailed`
    when this URL cannot deliver it (the partial file is kept for a resume).
    """
    for _attempt in range(2):
        try:
            _fetch_once(url, partial, entry, limits=limits, show=show, console=console)
            return
        except _StartOver:
            _remove(partial)
    raise _UrlFailed("the server's answers to a resumed download do not fit together")


def _fetch_once(url: str, partial: Path, entry: ModelEntry, *, limits: _Limits, show: bool,
                console: Console) -> None:
    offset = _size(partial)
    with connection.Timer() as timer:
        # Connection, TLS, status line and headers: one stall window at most, and within the deadline.
        left = limits.deadline - time.monotonic()
        timer.arm(min(limits.timeout, left), _DEADLINE if left < limits.timeout else
                  f"no status line and headers within {limits.timeout:g} s")
        response = _open(url, offset, limits.timeout, timer)
        if response is None:
            return  # the partial file is already complete
        if timer.expired:  # cut off mid-answer: what http.client parsed is a fragment
            response.close()
            raise _UrlFailed(timer.expired)
        timer.arm(limits.deadline - time.monotonic(), _DEADLINE)  # the body: its stall rule, and the deadline
        with response:
            total, mode = _expected(response, offset, limits)
            _receive(response, partial, mode, total, entry, limits, timer, show, console)


def _open(url: str, offset: int, timeout: float, timer: connection.Timer) -> http.client.HTTPResponse | None:
    """The server's answer to a GET from ``offset``; None when a resumed file turns out complete."""
    headers = {"User-Agent": f"livepuppet/{__version__}", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        request = urllib.request.Request(url, headers=headers)
        with connection.watched_by(timer):
            return connection.OPENER.open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            # Nothing left to send: the partial file is complete, unless the
            # server says the file has another size.
            total = _parse_content_range(exc.headers.get("Content-Range"))[2]
            if total is None or total == offset:
                return None
            raise _StartOver() from None
        raise _UrlFailed(_describe(exc, timeout)) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        raise _UrlFailed(timer.expired or _describe(exc, timeout)) from None


def _expected(response: http.client.HTTPResponse, offset: int, limits: _Limits) -> tuple[int | None, str]:
    """(the file's total size if known, the mode to open the partial file in) from the answer's headers."""
    length = _int_or_none(response.headers.get("Content-Length"))
    if response.status == 206:
        start, _end, total = _parse_content_range(response.headers.get("Content-Range"))
        if start != offset:
            raise _StartOver()
        if total is None and length is not None:
            total = offset + length
        mode = "ab" if offset else "wb"
    elif response.status == 200:
        # No resume (the server ignored the Range header): start from zero.
        total, mode = length, "wb"
    else:
        raise _UrlFailed(f"unexpected HTTP {response.status} answer")
    if total is not None and total > limits.max_size:
        raise _UrlFailed(f"the server announces {total} bytes, more than the {limits.max_size} of the file")
    return total, mode


def _receive(response: http.client.HTTPResponse, partial: Path, mode: str, total: int | None, entry: ModelEntry,
             limits: _Limits, timer: connection.Timer, show: bool, console: Console) -> None:
    """Append the body to ``partial``: a stalled, endless or late one fails the URL (the partial file is kept)."""
    try:
        out = open(partial, mode, buffering=0)  # unbuffered: a full disk fails in write, never later in close
    except OSError as exc:
        raise DownloadError(f"cannot write {partial}: {_os_reason(exc)}") from None
    written = offset = _size(partial) if mode == "ab" else 0
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with out, Progress(*columns, console=console, disable=not show) as bar:
        task = bar.add_task(entry.filename + (" (resuming)" if offset else ""), total=total or entry.size,
                            completed=offset)
        watch = _Watch(limits)
        while True:
            try:
                chunk = response.read1(CHUNK_SIZE)  # what has arrived: a trickle cannot block for hours
            except (OSError, http.client.HTTPException, ValueError) as exc:
                raise _UrlFailed(_cut_off(written, total, timer.expired or _describe(exc, limits.timeout))) from None
            if not chunk:
                if timer.expired:
                    raise _UrlFailed(_cut_off(written, total, timer.expired))
                break
            written += len(chunk)
            if written > limits.max_size:
                raise _UrlFailed(_cut_off(written, total, f"the server sends more than the {limits.max_size} "
                                                          "bytes of the file"))
            _write_all(out, chunk, partial)
            if problem := watch.check(len(chunk)):
                raise _UrlFailed(_cut_off(written, total, problem))
            bar.update(task, advance=len(chunk))
    if total is not None and written < total:
        raise _UrlFailed(_cut_off(written, total, "connection closed"))


def _write_all(out, chunk: bytes, partial: Path) -> None:
    view = memoryview(chunk)
    try:
        while view:
            view = view[out.write(view):]
    except OSError as exc:
        raise DownloadError(f"cannot write {partial}: {_os_reason(exc)}; the part downloaded so far is kept "
                            "and the next download resumes it") from None


@dataclass(frozen=True)
class _Limits:
    timeout: float  # seconds per connection attempt and per read; also the stall window
    deadline: float  # time.monotonic() by which the whole download must be done
    max_size: int  # bytes the file may have: the registry's size, else MAX_UNKNOWN_SIZE


class _Watch:
    """Stall and deadline checks: a server sending a byte every few seconds never trips a read timeout."""

    def __init__(self, limits: _Limits) -> None:
        self.limits = limits
        self.window_start, self.window_bytes = time.monotonic(), 0

    def check(self, received: int) -> str | None:
        now = time.monotonic()
        if now > self.limits.deadline:
            return _DEADLINE
        self.window_bytes += received
        if now - self.window_start >= self.limits.timeout:
            if self.window_bytes < STALL_BYTES:
                return f"stalled (under {STALL_BYTES // 1024} KB in {self.limits.timeout:g} s)"
            self.window_start, self.window_bytes = now, 0
        return None


def _cut_off(written: int, total: int | None, why: str) -> str:
    of = f" of {total}" if total is not None else ""
    return f"{why} after {written}{of} bytes"


def _parse_content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """``(start, end, total)`` from a ``Content-Range`` header; ``None`` where absent."""
    match = _CONTENT_RANGE_RE.match(value or "")
    if not match:
        return None, None, None
    start, end, total = match.groups()
    return _int_or_none(start), _int_or_none(end), _int_or_none(total)


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


# --------------------------------------------------------------------------
# checks and messages


def _verify(path: Path, entry: ModelEntry, console: Console | None) -> str | None:
    """``None`` when the file matches the entry's checksums, else what differed."""
    hashes = []
    if entry.md5:
        hashes.append(("md5", entry.md5.lower(), hashlib.md5(usedforsecurity=False)))
    if entry.sha256:
        hashes.append(("sha256", entry.sha256.lower(), hashlib.sha256()))
    if not hashes:
        return None
    try:
        with open(path, "rb") as f:
            if console is not None:
                with console.status(f"verifying {entry.filename}"):
                    _hash_file(f, hashes)
            else:
                _hash_file(f, hashes)
    except OSError as exc:
        raise DownloadError(f"cannot read {path}: {_os_reason(exc)}") from None
    for name, expected, h in hashes:
        got = h.hexdigest()
        if got != expected:
            return f"{name} expected {expected}, got {got}"
    return None


def _hash_file(f, hashes) -> None:
    while chunk := f.read(1 << 20):
        for _name, _expected, h in hashes:
            h.update(chunk)


def _by_hand(entry: ModelEntry, folder: Path, source: str = "") -> str:
    if entry.md5:
        check = f"check that its md5 is {entry.md5}"
    elif entry.sha256:
        check = f"check that its sha256 is {entry.sha256}"
    else:
        check = "no checksum is known for it"
    return f"Get {entry.filename} by hand{source}, {check}, and put it in the folder {folder}"


def _all_failed(entry: ModelEntry, folder: Path, failures: list[tuple[str, str]], kept: int) -> str:
    lines = [f"could not download {entry.filename} (model {entry.name!r}):"]
    lines += [f"  {url}: {reason}" for url, reason in failures]
    lines.append(_by_hand(entry, folder, " from one of the URLs above") + ".")
    if kept:
        lines.append(f"The {kept} bytes already downloaded are kept; running again resumes the download.")
    return "\n".join(lines)


def _describe(exc: BaseException, timeout: float) -> str:
    """A few words for a network error."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}".rstrip()
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if not isinstance(reason, BaseException):
            return str(reason)
        exc = reason
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({_os_reason(exc)})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, http.client.IncompleteRead):
        return "connection closed"
    if isinstance(exc, http.client.HTTPException):
        return f"bad HTTP answer ({type(exc).__name__})"
    if isinstance(exc, OSError):
        return _os_reason(exc)
    return str(exc) or type(exc).__name__


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
