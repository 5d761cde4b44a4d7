"""Download apStar files and allStar catalogs from the SDSS Science Archive Server (SAS).

URL layout (``https://data.sdss.org/sas/`` + …):

* DR14: ``dr14/apogee/spectro/redux/r8/stars/{TELESCOPE}/{LOCATION_ID}/apStar-r8-{APOGEE_ID}.fits``
  (DR14 directories are numbered by location); allStar ``dr14/apogee/spectro/redux/r8/allStar-l31c.2.fits``.
* DR16: ``dr16/apogee/spectro/redux/r12/stars/{TELESCOPE}/{FIELD}/apStar-r12-{APOGEE_ID}.fits``
  (``asStar-`` for lco25m); allStar ``dr16/apogee/spectro/aspcap/r12/l33/allStar-r12-l33.fits``.
* DR17: ``dr17/apogee/spectro/redux/dr17/stars/{TELESCOPE}/{FIELD}/apStar-dr17-{APOGEE_ID}.fits``
  (``asStar-`` for lco25m); allStar
  ``dr17/apogee/spectro/aspcap/dr17/synspec_rev1/allStar-dr17-synspec_rev1.fits``.

Downloads run concurrently with retries and exponential backoff, resume partial files with HTTP
Range requests, write to ``<name>.part`` and rename only once the file validates, and skip files
that are already present and valid.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import requests

from apogeenet.io.apstar import ApStarError, read_apstar
from apogeenet.progress import progress_bar

__all__ = [
    "RELEASES",
    "DownloadJob",
    "DownloadResult",
    "Release",
    "allstar_url",
    "apstar_jobs",
    "apstar_url",
    "download_files",
]

SAS_BASE_URL = "https://data.sdss.org/sas"


@dataclass(frozen=True)
class Release:
    name: str
    stars_dir: str
    apstar_tag: str
    allstar: str
    directory_key: Literal["location_id", "field"]


RELEASES: dict[str, Release] = {
    "dr14": Release("dr14", "dr14/apogee/spectro/redux/r8/stars", "r8",
                    "dr14/apogee/spectro/redux/r8/allStar-l31c.2.fits", "location_id"),
    "dr16": Release("dr16", "dr16/apogee/spectro/redux/r12/stars", "r12",
                    "dr16/apogee/spectro/aspcap/r12/l33/allStar-r12-l33.fits", "field"),
    "dr17": Release("dr17", "dr17/apogee/spectro/redux/dr17/stars", "dr17",
                    "dr17/apogee/spectro/aspcap/dr17/synspec_rev1/allStar-dr17-synspec_rev1.fits",
                    "field"),
}


def _release(release: str) -> Release:
    try:
        return RELEASES[release.lower()]
    except KeyError:
        raise ValueError(f"unknown release {release!r}; choose one of {', '.join(RELEASES)}") from None


def apstar_path(release: str, telescope: str, field: str, apogee_id: str,
                location_id: int | None = None) -> str:
    """The SAS path of an apStar file, relative to the SAS root."""
    rel = _release(release)
    telescope, field, apogee_id = telescope.strip(), str(field).strip(), apogee_id.strip()
    if not telescope or not apogee_id:
        raise ValueError("telescope and APOGEE ID are required")
    if rel.directory_key == "location_id":
        if not location_id:
            raise ValueError(f"{rel.name} apStar directories are LOCATION_IDs: give location_id "
                             f"for {apogee_id}")
        directory = str(int(location_id))
    else:
        if not field:
            raise ValueError(f"{rel.name} apStar directories are FIELDs: give field for {apogee_id}")
        directory = field
    prefix = "asStar" if telescope.startswith("lco") else "apStar"
    return f"{rel.stars_dir}/{telescope}/{directory}/{prefix}-{rel.apstar_tag}-{apogee_id}.fits"


def apstar_url(release: str, telescope: str, field: str, apogee_id: str, *,
               location_id: int | None = None, base_url: str = SAS_BASE_URL) -> str:
    """The URL of one apStar file (see the module docstring for the layouts)."""
    return f"{base_url.rstrip('/')}/{apstar_path(release, telescope, field, apogee_id, location_id)}"


def allstar_url(release: str, *, base_url: str = SAS_BASE_URL) -> str:
    """The URL of a release's allStar catalog."""
    return f"{base_url.rstrip('/')}/{_release(release).allstar}"


@dataclass(frozen=True)
class DownloadJob:
    url: str
    dest: Path


@dataclass(frozen=True)
class DownloadResult:
    job: DownloadJob
    status: Literal["downloaded", "skipped", "failed"]
    attempts: int
    error: str = ""


def apstar_jobs(catalog, release: str, out_dir: str | os.PathLike, *,
                base_url: str = SAS_BASE_URL) -> list[DownloadJob]:
    """One job per distinct (telescope, directory, APOGEE ID) row of an allStar-like table.

    ``catalog`` is a pandas DataFrame with APOGEE_ID, TELESCOPE and FIELD (DR16/17) or
    LOCATION_ID (DR14) columns, any case. Files land in ``out_dir`` under the SAS layout
    ``{TELESCOPE}/{FIELD or LOCATION_ID}/{file}``.
    """
    table = catalog.rename(columns=str.upper)
    key = "LOCATION_ID" if _release(release).directory_key == "location_id" else "FIELD"
    missing = [c for c in ("APOGEE_ID", "TELESCOPE", key) if c not in table.columns]
    if missing:
        raise ValueError(f"catalog lacks column(s) {', '.join(missing)} needed for {release}")
    out_dir = Path(out_dir)
    jobs, seen = [], set()
    for row in table.to_dict("records"):
        sas = apstar_path(release, str(row["TELESCOPE"]), str(row.get("FIELD", "")),
                          str(row["APOGEE_ID"]), int(row.get("LOCATION_ID") or 0) or None)
        if sas not in seen:
            seen.add(sas)
            jobs.append(DownloadJob(f"{base_url.rstrip('/')}/{sas}",
                                    out_dir.joinpath(*sas.split("/")[-3:])))
    return jobs


class _Retryable(Exception):
    """A fault worth another attempt: a 5xx or 429, a cut connection, a timeout."""


def _validate_apstar(path: Path) -> None:
    read_apstar(path)


def download_files(jobs: Sequence[DownloadJob], *, workers: int = 4, retries: int = 5,
                   backoff_s: float = 1.0, timeout_s: float = 60.0,
                   validate: Callable[[Path], None] = _validate_apstar,
                   progress: bool = False) -> list[DownloadResult]:
    """Download ``jobs`` concurrently; one result per job, in the order given.

    A file already at its destination that passes ``validate`` is skipped. Otherwise bytes go to
    ``<dest>.part``; an interrupted transfer resumes from the part file with an HTTP Range request.
    HTTP 5xx/429, cut connections and timeouts are retried up to ``retries`` times, waiting
    ``backoff_s · 2^k`` seconds; other HTTP errors (404) fail at once. A complete part file that
    fails ``validate`` is deleted and downloaded again. Only a validated file is renamed to its
    final name, so the destination never holds a partial or corrupt file.
    """
    local = threading.local()

    def session() -> requests.Session:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return local.session

    def run(job: DownloadJob) -> DownloadResult:
        if job.dest.exists():
            try:
                validate(job.dest)
                return DownloadResult(job, "skipped", 0)
            except (ApStarError, OSError, ValueError):
                pass  # a corrupt file under the final name: fetch it again
        job.dest.parent.mkdir(parents=True, exist_ok=True)
        part = job.dest.with_name(job.dest.name + ".part")
        error = ""
        for attempt in range(1, retries + 2):
            try:
                _fetch(session(), job.url, part, timeout_s)
                try:
                    validate(part)
                except (ApStarError, OSError, ValueError) as exc:
                    part.unlink(missing_ok=True)
                    raise _Retryable(f"downloaded file is not valid: {exc}") from None
                os.replace(part, job.dest)
                return DownloadResult(job, "downloaded", attempt)
            except _Retryable as exc:
                error = str(exc)
                if attempt <= retries:
                    time.sleep(backoff_s * 2 ** (attempt - 1))
            except requests.HTTPError as exc:
                return DownloadResult(job, "failed", attempt, str(exc))
        return DownloadResult(job, "failed", retries + 1, error)

    results: dict[int, DownloadResult] = {}
    with progress_bar(len(jobs), "download", enabled=progress) as bar, \
            ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(run, job): i for i, job in enumerate(jobs)}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            bar.advance()
    return [results[i] for i in range(len(jobs))]


def _fetch(session: requests.Session, url: str, part: Path, timeout_s: float) -> None:
    """Fetch ``url`` into ``part``, resuming from the bytes already there."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with session.get(url, headers=headers, stream=True, timeout=timeout_s) as response:
            if response.status_code == 416:  # part file longer than the resource: start over
                part.unlink(missing_ok=True)
                raise _Retryable("HTTP 416 on resume; restarting from byte 0")
            if response.status_code >= 500 or response.status_code == 429:
                raise _Retryable(f"HTTP {response.status_code} from {url}")
            response.raise_for_status()
            resumed = response.status_code == 206
            expected = response.headers.get("Content-Length")
            received = 0
            with open(part, "ab" if resumed else "wb") as fh:
                for chunk in response.iter_content(chunk_size=1 << 16):
                    fh.write(chunk)
                    received += len(chunk)
            if expected is not None and received < int(expected):
                raise _Retryable(f"connection closed after {received} of {expected} bytes")
    except (requests.ConnectionError, requests.Timeout,
            requests.exceptions.ChunkedEncodingError) as exc:
        raise _Retryable(f"{type(exc).__name__}: {exc}") from None
