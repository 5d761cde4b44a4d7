"""The ``apogeenet`` command as a user runs it: real processes, real exit codes, no tracebacks."""

from __future__ import annotations

import json

import pytest
from badfiles import make_bad
from commands import run


def test_inspect_prints_good_files_and_one_line_per_bad_one(multi_visit_file, single_visit_file, tmp_path):
    bad1 = make_bad("truncated", multi_visit_file, tmp_path / "cut.fits")
    bad2 = make_bad("not_fits", multi_visit_file, tmp_path / "readme.fits")
    result = run("inspect", "--json", multi_visit_file, bad1, single_visit_file, bad2)
    assert result.returncode == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["APOGEE_ID"] for r in records] == ["2M00452143+1634446", "2M03290406+3117075"]
    assert set(records[0]) == {"file", "APOGEE_ID", "TELESCOPE", "FIELD", "NVISITS", "SNR", "RA",
                               "DEC", "n_pixels", "n_good_pixels"}
    assert records[1]["NVISITS"] == 1 and records[0]["n_pixels"] == 8575
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 2 and "Traceback" not in result.stderr
    assert "cut.fits: truncated" in errors[0] and "readme.fits: not a FITS file" in errors[1]


def test_inspect_table_output(multi_visit_file):
    result = run("inspect", multi_visit_file)
    assert result.returncode == 0
    assert "2M00452143+1634446" in result.stdout and "120-45" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["ingest", "/nonexistent/tree", "store"], "no such directory"),
    (["download", "--catalog", "/nonexistent.csv", "--out", "x"], "no such file"),
    (["download", "--catalog", "cat.txt", "--out", "x"], "unknown table format"),
])
def test_user_mistakes_give_one_line_and_exit_2(args, message, tmp_path):
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["train", "--profile", "fast", "--no-track"], "train.profile"),             # a profile params.yaml lacks
    (["train", "--no-track", "--labels", "/nonexistent"], "labels.parquet"),            # a stage input missing
    (["predict", "--uncertainty", "bayes", "--no-track"], "'bayes' is not one of"),  # an enum, checked by the CLI
    (["label-mdwarfs", "a.csv", "b.csv", "--recipe", "mine"], "'mine' is not one of"),
    (["predict", "--draws", "20000", "--no-track"], "max_draws"),
])
def test_a_bad_option_is_one_line_naming_the_setting(args, message, tmp_path):
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1, result.stderr


def test_bad_params_file_is_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text("ingest:\n  workers: 0\n")
    result = run("ingest", tmp_path, tmp_path / "store", cwd=tmp_path)
    assert result.returncode == 2
    assert "ingest.workers" in result.stderr and "Traceback" not in result.stderr


def test_report_before_any_stage_is_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text(f"paths: {{model: {tmp_path / 'm'}, adapted: {tmp_path / 'a'}, "
                                          f"evaluation: {tmp_path / 'e'}, catalog: {tmp_path / 'c'}}}\n")
    result = run("report", "--params", tmp_path / "params.yaml")
    assert result.returncode == 2 and "no stage has run yet" in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "quality.md").write_text("Quality bar of model.pt\n")
    result = run("report", "--params", tmp_path / "params.yaml")
    assert result.returncode == 0 and "== evaluation" in result.stdout and "Quality bar of model.pt" in result.stdout


def test_predict_takes_apstar_files_directly(multi_visit_file, single_visit_file, tmp_path):
    """`apogeenet predict FILE... --out NAME.fits`: no store to build; a .txt lists more files;
    one line for each file that cannot be read, and the rest predicted with the Table 4 columns."""
    import pandas as pd
    import torch
    from astropy.table import Table
    from factories import TABLE1

    from apogeenet.model import ApogeeNet
    from apogeenet.serving import Predictor

    torch.manual_seed(0)
    Predictor(ApogeeNet(3).eval(), TABLE1, None).save(tmp_path / "model.pt")
    bad = make_bad("truncated", multi_visit_file, tmp_path / "cut.fits")
    (tmp_path / "more.txt").write_text(f"# the single-visit star\n{single_visit_file}\n{tmp_path / 'gone.fits'}\n")
    result = run("predict", multi_visit_file, bad, "more.txt", "--model", tmp_path / "model.pt",
                 "--draws", 4, "--out", "results/stars.fits", "--no-track", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    unreadable = [line for line in result.stderr.splitlines() if line.startswith("unreadable:")]
    assert len(unreadable) == 2 and "Traceback" not in result.stderr
    assert "cut.fits: truncated" in unreadable[0] + unreadable[1] and "gone.fits: no such file" in result.stderr
    assert "2 of 4 files predicted" in result.stdout
    table = Table.read(tmp_path / "results" / "stars.fits")
    assert sorted(table["APOGEE_ID"]) == ["2M00452143+1634446", "2M03290406+3117075"]
    assert str(table["TEFF_ERR"].unit) == "K" and (table["TEFF_ERR"] > 0).all()
    assert len(pd.read_parquet(tmp_path / "results" / "stars.parquet")) == 2
