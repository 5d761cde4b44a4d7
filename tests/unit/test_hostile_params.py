"""A params.yaml a user receives is data: every bad value is one named line (ConfigError), never a
traceback later, never an unbounded allocation, never silently accepted."""

from __future__ import annotations

import time

import pytest
import yaml

from apogeenet.config import ConfigError, load_params

BILLION_LAUGHS = """a: &a ["x","x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h,*h]
paths: {store: *i}
"""


@pytest.mark.parametrize("text, message", [
    ("train:\n  profiles:\n    demo:\n      seed: 1180591620717411303424\n", "seed"),   # 2**70
    ("train:\n  profiles:\n    demo:\n      seed: -1\n      augment: noise\n", "seed"),
    ("synth:\n  seed: -1\n", "synth.seed"),
    ("yso:\n  seed: 4294967296\n", "yso.seed"),
    ("dask:\n  cluster: bogus://scheduler\n", "dask.cluster"),
    ("dask:\n  cluster: schedulerhost:8786\n", "dask.cluster"),
    ("predict:\n  bounds:\n    teff: [12000.0, 2000.0]\n    logg: [-1.0, 6.0]\n    fe_h: [-3.0, 1.5]\n", "predict.bounds"),
    ("predict:\n  max_sigma:\n    teff: -5.0\n    logg: 0.5\n    fe_h: 0.25\n", "predict.max_sigma"),
    ("predict:\n  hot_teff: .nan\n", "predict.hot_teff"),
    ("predict:\n  error_cap: .inf\n", "predict.error_cap"),
    ("predict:\n  draws: 1000000000\n", "max_draws"),
    ("paths:\n  store: derived/store\npaths:\n  store: elsewhere\n", "duplicate key 'paths'"),
    ("train:\n  profile: demo\n  profile: paper\n", "duplicate key 'profile'"),
    (BILLION_LAUGHS, "aliases"),
])
def test_bad_values_are_one_named_line(tmp_path, text, message):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=message) as caught:
        load_params(path)
    assert time.perf_counter() - started < 5  # no expansion of aliases, no work before refusing
    assert "\n" not in str(caught.value)


def test_a_huge_path_and_a_huge_file_are_refused(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"paths": {"store": "x" * 5_000_000}}))
    with pytest.raises(ConfigError, match="larger than"):
        load_params(path)
    path.write_text(yaml.safe_dump({"paths": {"store": "x" * 10_000}}))
    with pytest.raises(ConfigError, match="paths.store: .*not a usable path"):
        load_params(path)


def test_the_defaults_and_the_shipped_params_still_load():
    from pathlib import Path

    shipped = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
    assert shipped.predict.draws <= shipped.predict.max_draws
    assert shipped.with_overrides({"predict.draws": 2000}).predict.draws == 2000
    with pytest.raises(ConfigError, match="max_draws"):
        shipped.with_overrides({"predict.draws": 20_000_000})


def test_an_unreachable_scheduler_is_one_line():
    import socket

    from apogeenet.cluster import dask_client
    from apogeenet.config import DaskParams
    from apogeenet.errors import UserFacingError

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(UserFacingError, match="cannot reach the Dask scheduler"):
        with dask_client(DaskParams(cluster=f"tcp://127.0.0.1:{port}")):
            pass
