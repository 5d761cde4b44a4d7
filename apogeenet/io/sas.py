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

A catalog and a server are input, not instructions: a row whose APOGEE_ID, TELESCOPE or FIELD is
not a plain name (``../``, ``/``, spaces, control characters) is refused, every file lands inside
the output directory (checked after resolving links), redirects are followed only to the same
host unless the host is allowed, and a body larger than ``max_bytes`` is cut off and discarded.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from apogeenet.errors import InputError
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
    "validate_allstar",
    "estimated_bytes",
    "select_rows",
]

SAS_BASE_URL = "https://data.sdss.org/sas"
MAX_APSTAR_BYTES = 256 << 20
"""apStar files are a few MB (tens with many visits); anything far larger is not one."""
MAX_REDIRECTS = 5
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9+._-]{0,127}")


def _plain(value: str, what: str) -> str:
    """``value`` if it is a plain file-name component (no separators, no ``..``), else ValueError."""
    if not _PLAIN_NAME.fullmatch(value) or ".." in value:
        raise InputError(f"unsafe {what} {value!r}: not a plain name, refused (it would place files "
                         "outside the output directory)")
    return value


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
        raise InputError(f"unknown release {release!r}; choose one of {', '.join(RELEASES)}") from None


def apstar_path(release: str, telescope: str, field: str, apogee_id: str,
                location_id: int | None = None) -> str:
    """The SAS path of an apStar file, relative to the SAS root."""
    rel = _release(release)
    telescope, field, apogee_id = telescope.strip(), str(field).strip(), apogee_id.strip()
    if not telescope or not apogee_id:
        raise InputError("telescope and APOGEE ID are required")
    _plain(telescope, "TELESCOPE")
    _plain(apogee_id, "APOGEE_ID")
    if rel.directory_key == "location_id":
        if not location_id:
            raise InputError(f"{rel.name} apStar directories are LOCATION_IDs: give location_id "
                             f"for {apogee_id}")
        directory = str(int(location_id))
    else:
        if not field:
            raise InputError(f"{rel.name} apStar directories are FIELDs: give field for {apogee_id}")
        directory = _plain(field, "FIELD")
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
    root: Path | None = None
    """The directory ``dest`` must stay inside (None: ``dest``'s own directory)."""
    refused: str = ""
    """Why this row of a catalog gets no download (an unsafe name); the job fails at once."""


@dataclass(frozen=True)
class DownloadResult:
    job: DownloadJob
    status: Literal["downloaded", "skipped", "failed"]
    attempts: int
    error: str = ""


APSTAR_HEADER_BYTES, APSTAR_ROW_BYTES = 43_000, 229_500
"""apStar size ≈ 43 kB + 229.5 kB per spectrum row (NVISITS + 2 rows, 1 for a single visit):
a least-squares fit to the 19 real DR13 files (276 kB for 1 visit to 2.3 MB for 8)."""


def estimated_bytes(catalog) -> int:
    """The expected size of the apStar files of ``catalog``'s rows, from NVISITS (5 rows, 3
    visits, where a row has no NVISITS)."""
    import numpy as np

    table = catalog.rename(columns=str.upper)
    visits = table["NVISITS"].to_numpy(float) if "NVISITS" in table else np.full(len(table), 3.0)
    visits = np.where(np.isfinite(visits) & (visits >= 1), visits, 3.0)
    rows = np.where(visits == 1, 1, visits + 2)
    return int(APSTAR_HEADER_BYTES * len(rows) + APSTAR_ROW_BYTES * rows.sum())


def select_rows(catalog, ids: list[str] | None = None, limit: int | None = None):
    """The rows of ``catalog`` whose APOGEE_ID is in ``ids`` (all without), then the first ``limit``."""
    table = catalog.rename(columns={c: "APOGEE_ID" for c in catalog.columns if c.lower() == "apogee_id"})
    if ids is not None:
        if "APOGEE_ID" not in table:
            raise InputError("catalog lacks column(s) APOGEE_ID")
        table = table[table["APOGEE_ID"].astype(str).str.strip().isin({i.strip() for i in ids})]
    return table.head(limit) if limit is not None else table


def apstar_jobs(catalog, release: str, out_dir: str | os.PathLike, *,
                base_url: str = SAS_BASE_URL) -> list[DownloadJob]:
    """One job per distinct (telescope, directory, APOGEE ID) row of an allStar-like table.

    ``catalog`` is a pandas DataFrame with APOGEE_ID, TELESCOPE and FIELD (DR16/17) or
    LOCATION_ID (DR14) columns, any case. Files land in ``out_dir`` under the SAS layout
    ``{TELESCOPE}/{FIELD or LOCATION_ID}/{file}``. A row whose names are not plain becomes a
    refused job (it fails with the reason, the other rows are downloaded).
    """
    table = catalog.rename(columns=str.upper)
    key = "LOCATION_ID" if _release(release).directory_key == "location_id" else "FIELD"
    missing = [c for c in ("APOGEE_ID", "TELESCOPE", key) if c not in table.columns]
    if missing:
        raise InputError(f"catalog lacks column(s) {', '.join(missing)} needed for {release}")
    out_dir = Path(out_dir)
    jobs, seen = [], set()
    for number, row in enumerate(table.to_dict("records")):
        try:
            sas = apstar_path(release, str(row["TELESCOPE"]), str(row.get("FIELD", "")),
                              str(row["APOGEE_ID"]), int(row.get("LOCATION_ID") or 0) or None)
        except InputError as exc:
            if "unsafe" not in str(exc):
                raise
            jobs.append(DownloadJob(f"catalog row {number} ({row['APOGEE_ID']!r})", out_dir, out_dir, str(exc)))
            continue
        if sas not in seen:
            seen.add(sas)
            jobs.append(DownloadJob(f"{base_url.rstrip('/')}/{sas}",
                                    out_dir.joinpath(*sas.split("/")[-3:]), out_dir))
    return jobs


class _Retryable(Exception):
    """A fault worth another attempt: a 5xx or 429, a cut connection, a timeout."""


class _Refused(Exception):
    """A fault no retry can mend: a cross-host redirect, a body over the size cap."""


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def _validate_apstar(path: Path) -> None:
    read_apstar(path)


def validate_allstar(path: Path) -> None:
    """A downloaded allStar file: valid FITS with a table in HDU1 (ValueError otherwise)."""
    from astropy.io import fits

    with fits.open(path) as hdul:
        hdul.verify("exception")
        if len(hdul) < 2 or not isinstance(hdul[1], fits.BinTableHDU):
            raise ValueError(f"{path}: no table in HDU1")


def download_files(jobs: Sequence[DownloadJob], *, workers: int = 4, retries: int = 5,
                   backoff_s: float = 1.0, timeout_s: float = 60.0, deadline_s: float = 3600.0,
                   validate: Callable[[Path], None] = _validate_apstar,
                   max_bytes: int | None = MAX_APSTAR_BYTES, allowed_hosts: Sequence[str] = (),
                   progress: bool = False) -> list[DownloadResult]:
    """Download ``jobs`` concurrently; one result per job, in the order given.

    A file already at its destination that passes ``validate`` is skipped. Otherwise bytes go to
    ``<dest>.part``; an interrupted transfer resumes from the part file with an HTTP Range request.
    HTTP 5xx/429, cut connections and timeouts are retried up to ``retries`` times, waiting
    ``backoff_s · 2^k`` seconds; other HTTP errors (404) fail at once. A complete part file that
    fails ``validate`` is deleted and downloaded again. Only a validated file is renamed to its
    final name, so the destination never holds a partial or corrupt file.

    A job whose destination (or part file) resolves outside its ``root`` fails; a redirect to a
    host other than the URL's own fails unless that host is in ``allowed_hosts``; a body larger
    than ``max_bytes`` (None: no cap) fails and its part file is deleted. A file not complete
    within ``deadline_s`` (a server trickling a byte at a time never times out) fails, its part
    kept for a later resume; a full disk fails the row with its reason, never the whole run.
    """
    local = threading.local()

    def session() -> requests.Session:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return local.session

    def run(job: DownloadJob) -> DownloadResult:
        if job.refused:
            return DownloadResult(job, "failed", 0, job.refused)
        part = job.dest.with_name(job.dest.name + ".part")
        root = job.root or job.dest.parent
        job.dest.parent.mkdir(parents=True, exist_ok=True)
        if not (_inside(job.dest, root) and _inside(part, root)):
            return DownloadResult(job, "failed", 0, f"{job.dest} is outside the output directory {root}: refused")
        if job.dest.exists():
            try:
                validate(job.dest)
                return DownloadResult(job, "skipped", 0)
            except (ApStarError, OSError, ValueError):
                pass  # a corrupt file under the final name: fetch it again
        error = ""
        deadline = time.monotonic() + deadline_s
        for attempt in range(1, retries + 2):
            try:
                _fetch(session(), job.url, part, timeout_s, max_bytes, allowed_hosts, deadline)
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
            except (requests.HTTPError, _Refused) as exc:
                return DownloadResult(job, "failed", attempt, str(exc))
            except OSError as exc:  # a full disk, a read-only directory: this row fails with its reason
                return DownloadResult(job, "failed", attempt, f"cannot write {part}: {exc.strerror or exc}")
            if time.monotonic() > deadline:
                break
        return DownloadResult(job, "failed", retries + 1, error)

    results: dict[int, DownloadResult] = {}
    with progress_bar(len(jobs), "download", enabled=progress) as bar, \
            ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(run, job): i for i, job in enumerate(jobs)}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            bar.advance()
    return [results[i] for i in range(len(jobs))]


def _get(session: requests.Session, url: str, headers: dict, timeout_s: float,
         allowed_hosts: Sequence[str]) -> requests.Response:
    """GET with redirects followed by hand: only to the same scheme, host and port, or to an
    allowed host."""
    origin = urlsplit(url)
    for _ in range(MAX_REDIRECTS + 1):
        response = session.get(url, headers=headers, stream=True, timeout=timeout_s, allow_redirects=False)
        if not response.is_redirect:
            return response
        target = urljoin(url, response.headers["Location"])
        response.close()
        where = urlsplit(target)
        same = (where.scheme, where.hostname, where.port) == (origin.scheme, origin.hostname, origin.port)
        if not same and where.hostname not in allowed_hosts:
            raise _Refused(f"redirect from {origin.hostname} to another host {where.hostname!r} refused "
                           "(allow the host to follow it)")
        url = target
    raise _Refused(f"more than {MAX_REDIRECTS} redirects")


def _fetch(session: requests.Session, url: str, part: Path, timeout_s: float,
           max_bytes: int | None = MAX_APSTAR_BYTES, allowed_hosts: Sequence[str] = (),
           deadline: float = float("inf")) -> None:
    """Fetch ``url`` into ``part``, resuming from the bytes already there."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with _get(session, url, headers, timeout_s, allowed_hosts) as response:
            if response.status_code == 416:  # part file longer than the resource: start over
                part.unlink(missing_ok=True)
                raise _Retryable("HTTP 416 on resume; restarting from byte 0")
            if response.status_code >= 500 or response.status_code == 429:
                raise _Retryable(f"HTTP {response.status_code} from {url}")
            response.raise_for_status()
            resumed = response.status_code == 206
            expected = response.headers.get("Content-Length")
            start = offset if resumed else 0
            if max_bytes is not None and expected is not None and start + int(expected) > max_bytes:
                part.unlink(missing_ok=True)
                raise _Refused(f"{start + int(expected)} bytes announced, over the {max_bytes}-byte cap")
            received = 0
            with open(part, "ab" if resumed else "wb") as fh:
                # read1: whatever has arrived (iter_content would wait for 64 KiB from a trickle)
                for chunk in iter(lambda: response.raw.read1(1 << 16, decode_content=True), b""):
                    if time.monotonic() > deadline:
                        raise _Refused(f"not complete within the download deadline (download.deadline_s); "
                                       f"{start + received} bytes kept in {part.name} for a later resume")
                    received += len(chunk)
                    if max_bytes is not None and start + received > max_bytes:
                        fh.close()
                        part.unlink(missing_ok=True)
                        raise _Refused(f"body over the {max_bytes}-byte cap: discarded")
                    fh.write(chunk)
            if expected is not None and received < int(expected):
                raise _Retryable(f"connection closed after {received} of {expected} bytes")
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
            urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError) as exc:
        raise _Retryable(f"{type(exc).__name__}: {exc}") from None
