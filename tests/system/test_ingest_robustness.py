"""Ingest under kills, concurrency and odd trees: a rerun after a kill equals an uninterrupted
ingest, a second ingest gets one line, odd names, links and unreadable directories are reject rows."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from commands import run
from kills import killed_at, same_store


@pytest.mark.parametrize("target, nth", [
    ("h5py:Group.create_dataset", 2),             # inside the first segment's write
    ("apogeenet.ingest:_write_atomic", 1),         # segment written, index not yet: an orphan segment
    ("h5py:Group.create_dataset", 5),             # inside the second segment's write
])
def test_ingest_killed_at_a_dangerous_moment_then_rerun_equals_an_uninterrupted_one(small_tree, tmp_path, target, nth):
    from apogeenet.ingest import ingest

    ingest(small_tree, tmp_path / "clean", workers=1, segment_rows=5)
    killed_at(target, nth, f"from apogeenet.ingest import ingest\n"
                            f"ingest({str(small_tree)!r}, {str(tmp_path / 'killed')!r}, workers=1, segment_rows=5)")
    report = ingest(small_tree, tmp_path / "killed", workers=1, segment_rows=5)
    assert report.rejected == 0
    same_store(tmp_path / "clean", tmp_path / "killed")
    assert not [p for p in (tmp_path / "killed" / "segments").iterdir() if p.name.startswith(".")]


def test_a_second_ingest_at_the_same_time_gets_one_line(small_tree, tmp_path):
    from filelock import FileLock

    store = tmp_path / "store"
    store.mkdir()
    with FileLock(str(store / ".ingest.lock")):  # an ingest in progress
        result = run("ingest", small_tree, store, cwd=tmp_path)
    assert result.returncode == 2 and "another ingest is writing to this store" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert run("ingest", small_tree, store, cwd=tmp_path).returncode == 0  # and afterwards it runs


@pytest.fixture()
def odd_tree(small_tree, tmp_path):
    """The small tree plus an odd name, a dangling link, a link loop and a linked directory loop."""
    root = tmp_path / "src"
    import shutil

    shutil.copytree(small_tree, root, symlinks=True)
    good = sorted(root.rglob("*.fits"))[0]
    odd = os.fsencode(root / "odd") + b"/caf\xe9.fits"
    os.makedirs(os.fsencode(root / "odd"))
    with open(odd, "wb") as fh:
        fh.write(good.read_bytes())
    (root / "links").mkdir()
    (root / "links" / "dangling.fits").symlink_to(root / "nowhere.fits")
    (root / "links" / "loop.fits").symlink_to(root / "links" / "loop.fits")
    (root / "links" / "up").symlink_to(root)
    return root


def test_odd_names_and_links_become_reject_rows_and_reruns_do_not_grow_the_store(odd_tree, tmp_path):
    from apogeenet.store import SpectraStore
    from apogeenet.ingest import ingest

    first = ingest(odd_tree, tmp_path / "store", workers=1)
    reasons = dict(first.rejects)
    assert reasons == {"links/dangling.fits": "dangling symbolic link", "links/loop.fits": "symbolic link loop",
                       "links/up": "symbolic link loop: a directory already scanned",
                       "odd/caf\\xe9.fits": "file name is not valid UTF-8: rename the file"}
    assert len(SpectraStore(tmp_path / "store")) == 12
    segments = sorted((tmp_path / "store" / "segments").iterdir())
    again = ingest(odd_tree, tmp_path / "store", workers=1)
    assert not again.did_work and sorted((tmp_path / "store" / "segments").iterdir()) == segments


def test_an_unreadable_directory_is_a_reject_row(small_tree, tmp_path, monkeypatch):
    from apogeenet import ingest as ingest_module

    blocked = sorted(p for p in small_tree.rglob("*") if p.is_dir())[0]
    real_scandir = os.scandir

    def scandir(path):  # chmod 000 does not stop root, so the refusal is simulated
        if Path(path) == blocked:
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(ingest_module.os, "scandir", scandir)
    report = ingest_module.ingest(small_tree, tmp_path / "store", workers=1)
    name = blocked.relative_to(small_tree).as_posix() + "/"
    assert dict(report.rejects) == {name: "cannot read directory: Permission denied"}
