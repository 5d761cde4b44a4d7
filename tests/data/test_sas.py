"""SAS URLs and the downloader, against a local server on 127.0.0.1 with injected faults."""

from __future__ import annotations

import pandas as pd
import pytest
from sas_server import Faults
from typer.testing import CliRunner

from apogeenet.errors import InputError
from apogeenet.cli import app
from apogeenet.io import read_apstar
from apogeenet.io.sas import DownloadJob, allstar_url, apstar_jobs, apstar_url, download_files

BASE = "https://data.sdss.org/sas"
FAST = dict(retries=3, backoff_s=0.01, timeout_s=2.0)


def test_dr17_apstar_url_follows_the_sas_layout():
    assert apstar_url("dr17", "apo25m", "120-45", "2M00452143+1634446") == \
        f"{BASE}/dr17/apogee/spectro/redux/dr17/stars/apo25m/120-45/apStar-dr17-2M00452143+1634446.fits"


def test_lco_files_are_asstar():
    assert apstar_url("dr17", "lco25m", "293-37-C", "2M03174068-7748459").endswith(
        "stars/lco25m/293-37-C/asStar-dr17-2M03174068-7748459.fits")
    assert "/r12/stars/lco25m/F1/asStar-r12-" in apstar_url("dr16", "lco25m", "F1", "2M0")


def test_dr14_directories_are_location_ids():
    assert apstar_url("dr14", "apo25m", "120-45", "2M00452143+1634446", location_id=4476) == \
        f"{BASE}/dr14/apogee/spectro/redux/r8/stars/apo25m/4476/apStar-r8-2M00452143+1634446.fits"
    with pytest.raises(InputError, match="LOCATION_ID"):
        apstar_url("dr14", "apo25m", "120-45", "2M00452143+1634446")


def test_allstar_urls_and_unknown_release():
    assert allstar_url("dr17") == \
        f"{BASE}/dr17/apogee/spectro/aspcap/dr17/synspec_rev1/allStar-dr17-synspec_rev1.fits"
    assert allstar_url("DR14", base_url="http://x/") == "http://x/dr14/apogee/spectro/redux/r8/allStar-l31c.2.fits"
    with pytest.raises(InputError, match="unknown release 'dr99'"):
        allstar_url("dr99")


def test_jobs_from_a_catalog_deduplicate_and_mirror_the_layout(tmp_path):
    catalog = pd.DataFrame({"apogee_id": ["2MA", "2MA", "2MB"], "telescope": ["apo25m"] * 3,
                            "field": ["F1", "F1", "F2"]})
    jobs = apstar_jobs(catalog, "dr17", tmp_path, base_url="http://h/sas")
    assert [j.dest.relative_to(tmp_path).as_posix() for j in jobs] == \
        ["apo25m/F1/apStar-dr17-2MA.fits", "apo25m/F2/apStar-dr17-2MB.fits"]
    with pytest.raises(InputError, match="LOCATION_ID"):
        apstar_jobs(catalog, "dr14", tmp_path)


def _serve(fake_sas, multi_visit_file, name="apStar-dr17-2M00452143+1634446.fits"):
    path = f"sas/dr17/apogee/spectro/redux/dr17/stars/apo25m/120-45/{name}"
    fake_sas.files[path] = multi_visit_file.read_bytes()
    return path, f"{fake_sas.url}/{path[4:]}"


def test_survives_http_500s(fake_sas, multi_visit_file, tmp_path):
    path, url = _serve(fake_sas, multi_visit_file)
    fake_sas.faults[path] = Faults(errors=2)
    [result] = download_files([DownloadJob(url, tmp_path / "a.fits")], **FAST)
    assert (result.status, result.attempts) == ("downloaded", 3)
    assert (tmp_path / "a.fits").read_bytes() == multi_visit_file.read_bytes()


def test_resumes_a_file_cut_half_way_with_a_range_request(fake_sas, multi_visit_file, tmp_path):
    path, url = _serve(fake_sas, multi_visit_file)
    half = len(fake_sas.files[path]) // 2
    fake_sas.faults[path] = Faults(cut_at=half)
    [result] = download_files([DownloadJob(url, tmp_path / "a.fits")], **FAST)
    assert result.status == "downloaded"
    first, second = [r for p, r in fake_sas.requests if p == path]
    resumed_at = int(second.removeprefix("bytes=").rstrip("-"))
    assert first is None and half - (1 << 16) < resumed_at <= half  # what arrived before the cut
    assert (tmp_path / "a.fits").read_bytes() == multi_visit_file.read_bytes()
    assert not list(tmp_path.glob("*.part"))


def test_slow_response_times_out_and_is_retried(fake_sas, multi_visit_file, tmp_path):
    path, url = _serve(fake_sas, multi_visit_file)
    fake_sas.faults[path] = Faults(delay_s=1.5)
    [result] = download_files([DownloadJob(url, tmp_path / "a.fits")],
                              retries=2, backoff_s=0.01, timeout_s=0.5)
    assert (result.status, result.attempts) == ("downloaded", 2)
    read_apstar(tmp_path / "a.fits")


def test_persistent_errors_fail_without_leaving_a_file(fake_sas, multi_visit_file, tmp_path):
    path, url = _serve(fake_sas, multi_visit_file)
    fake_sas.faults[path] = Faults(errors=100)
    [result] = download_files([DownloadJob(url, tmp_path / "a.fits")], **FAST)
    assert (result.status, result.attempts) == ("failed", 4)
    assert "HTTP 500" in result.error
    assert not (tmp_path / "a.fits").exists()


def test_corrupt_content_never_reaches_the_final_name(fake_sas, multi_visit_file, tmp_path):
    path, url = _serve(fake_sas, multi_visit_file)
    fake_sas.faults[path] = Faults(corrupt=True)
    [result] = download_files([DownloadJob(url, tmp_path / "a.fits")], **FAST)
    assert result.status == "failed" and "not valid" in result.error
    assert list(tmp_path.iterdir()) == []


def test_404_fails_at_once(fake_sas, tmp_path):
    [result] = download_files([DownloadJob(f"{fake_sas.url}/missing.fits", tmp_path / "m.fits")], **FAST)
    assert (result.status, result.attempts) == ("failed", 1)
    assert "404" in result.error


def test_valid_files_are_skipped_and_corrupt_ones_replaced(fake_sas, multi_visit_file, tmp_path):
    path, url = _serve(fake_sas, multi_visit_file)
    job = DownloadJob(url, tmp_path / "a.fits")
    assert download_files([job], **FAST)[0].status == "downloaded"
    n = len(fake_sas.requests)
    assert download_files([job], **FAST)[0].status == "skipped"
    assert len(fake_sas.requests) == n
    job.dest.write_bytes(b"broken")
    assert download_files([job], **FAST)[0].status == "downloaded"
    assert job.dest.read_bytes() == multi_visit_file.read_bytes()


def test_cli_downloads_a_catalog_concurrently(fake_sas, multi_visit_file, single_visit_file, tmp_path):
    ids = [f"2M0000000{i}+0000000" for i in range(6)]
    for i, apogee_id in enumerate(ids):
        source = multi_visit_file if i % 2 else single_visit_file
        _serve(fake_sas, source, f"apStar-dr17-{apogee_id}.fits")
    fake_sas.faults[f"sas/dr17/apogee/spectro/redux/dr17/stars/apo25m/120-45/apStar-dr17-{ids[0]}.fits"] = \
        Faults(errors=1)
    catalog = tmp_path / "allStar.csv"
    pd.DataFrame({"APOGEE_ID": ids, "TELESCOPE": "apo25m", "FIELD": "120-45"}).to_csv(catalog, index=False)
    params = tmp_path / "params.yaml"
    params.write_text("download:\n  backoff_s: 0.01\n  workers: 3\n")
    result = CliRunner().invoke(app, ["download", "--release", "dr17", "--catalog", str(catalog),
                                      "--out", str(tmp_path / "out"), "--base-url", fake_sas.url,
                                      "--params", str(params)])
    assert result.exit_code == 0, result.output
    assert "6 downloaded, 0 skipped, 0 failed" in result.output
    assert sorted(p.name for p in (tmp_path / "out" / "apo25m" / "120-45").iterdir()) == \
        sorted(f"apStar-dr17-{i}.fits" for i in ids)


def test_the_expected_size_of_a_download_matches_real_apstar_files(multi_visit_file, single_visit_file):
    """--dry-run's estimate from NVISITS, against the real DR13 files shipped as examples."""
    import pandas as pd
    from astropy.io import fits

    from apogeenet.io.sas import estimated_bytes, select_rows

    for path in (multi_visit_file, single_visit_file):
        visits = fits.getheader(path, 0)["NVISITS"]
        estimate = estimated_bytes(pd.DataFrame({"APOGEE_ID": ["x"], "NVISITS": [visits]}))
        assert abs(estimate - path.stat().st_size) < 0.02 * path.stat().st_size, (visits, estimate)
    catalog = pd.DataFrame({"apogee_id": ["a", "b", "c", "d"], "NVISITS": [1, 3, 3, 8]})
    assert select_rows(catalog, ["c", " b"], 1)["APOGEE_ID"].tolist() == ["b"]
    assert len(select_rows(catalog, None, 3)) == 3 and len(select_rows(catalog)) == 4
