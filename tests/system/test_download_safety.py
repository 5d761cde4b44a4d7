"""Downloads stay inside the output: catalog rows with path parts, links, cross-host redirects and
oversized bodies are refused, the rest downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest


def _sas_file(fake_sas, source: Path, field: str = "120-45", apogee_id: str = "2M00452143+1634446") -> str:
    path = f"sas/dr17/apogee/spectro/redux/dr17/stars/apo25m/{field}/apStar-dr17-{apogee_id}.fits"
    fake_sas.files[path] = source.read_bytes()
    return path


@pytest.mark.parametrize("column, value", [("APOGEE_ID", "../../../escaped"), ("FIELD", "../.."),
                                           ("TELESCOPE", ".."), ("FIELD", "/etc"), ("APOGEE_ID", "a/b")])
def test_catalog_rows_with_path_parts_are_refused_and_the_rest_downloaded(
        fake_sas, multi_visit_file, tmp_path, column, value):
    import pandas as pd

    from apogeenet.io.sas import apstar_jobs, download_files

    _sas_file(fake_sas, multi_visit_file)
    catalog = pd.DataFrame({"APOGEE_ID": ["2M00452143+1634446", "2MX"], "TELESCOPE": "apo25m", "FIELD": "120-45"})
    catalog.loc[1, column] = value
    out = tmp_path / "deep" / "out"
    results = download_files(apstar_jobs(catalog, "dr17", out, base_url=fake_sas.url), backoff_s=0.01)
    assert [r.status for r in results] == ["downloaded", "failed"]
    assert "unsafe" in results[1].error
    written = {p for p in tmp_path.rglob("*") if p.is_file()}
    assert written and all(p.is_relative_to(out) for p in written)
    assert len(fake_sas.requests) == 1  # the refused row never reached the server


def test_a_link_inside_the_output_cannot_lead_outside(fake_sas, multi_visit_file, tmp_path):
    from apogeenet.io.sas import DownloadJob, download_files

    path = _sas_file(fake_sas, multi_visit_file)
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    (out / "apo25m").mkdir(parents=True)
    elsewhere.mkdir()
    (out / "apo25m" / "120-45").symlink_to(elsewhere)
    dest = out / "apo25m" / "120-45" / "apStar.fits"
    [result] = download_files([DownloadJob(f"{fake_sas.url}/{path[4:]}", dest, out)], backoff_s=0.01)
    assert result.status == "failed" and "outside the output directory" in result.error
    assert not list(elsewhere.iterdir())


def test_redirects_to_another_host_are_refused_unless_allowed(fake_sas, multi_visit_file, tmp_path):
    from sas_server import Faults

    from apogeenet.io.sas import DownloadJob, download_files

    real = _sas_file(fake_sas, multi_visit_file)
    port = fake_sas.url.split(":")[2].split("/")[0]
    fake_sas.faults["sas/moved.fits"] = Faults(redirect=f"/{real}")  # same host: followed
    fake_sas.faults["sas/away.fits"] = Faults(redirect=f"http://localhost:{port}/{real}")  # another host name
    jobs = [DownloadJob(f"{fake_sas.url}/{name}", tmp_path / name, tmp_path) for name in ("moved.fits", "away.fits")]
    same, away = download_files(jobs, backoff_s=0.01)
    assert same.status == "downloaded"
    assert away.status == "failed" and "another host 'localhost'" in away.error
    assert not (tmp_path / "away.fits").exists() and not (tmp_path / "away.fits.part").exists()
    [allowed] = download_files(jobs[1:], backoff_s=0.01, allowed_hosts=["localhost"])
    assert allowed.status == "downloaded"


@pytest.mark.parametrize("chunked", [False, True])
def test_bodies_over_the_size_cap_are_discarded(fake_sas, multi_visit_file, tmp_path, chunked):
    from sas_server import Faults

    from apogeenet.io.sas import DownloadJob, download_files

    path = _sas_file(fake_sas, multi_visit_file)
    fake_sas.faults[path] = Faults(chunked=chunked)  # chunked: no Content-Length to check first
    job = DownloadJob(f"{fake_sas.url}/{path[4:]}", tmp_path / "a.fits", tmp_path)
    [result] = download_files([job], backoff_s=0.01, max_bytes=100_000)
    assert result.status == "failed" and "cap" in result.error
    assert not list(tmp_path.iterdir())
    [result] = download_files([job], backoff_s=0.01, max_bytes=10_000_000)
    assert result.status == "downloaded"
