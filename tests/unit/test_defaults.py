"""One value per setting: the defaults of apogeenet.config are params.yaml's, and no library
function carries a default of its own for a setting params.yaml names."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import yaml

import apogeenet
from apogeenet.config import Params, load_params

REPO = Path(__file__).resolve().parents[2]


def test_the_config_defaults_are_the_params_file():
    assert load_params(REPO / "params.yaml") == Params()


def _leaves(node, prefix=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*prefix, key))
    else:
        yield prefix, node


def test_no_library_default_disagrees_with_params_yaml():
    """A keyword named like a setting (``forward_batch``, ``error_cap``, ``draws``, ...) either has
    no default or has params.yaml's value for it in some section."""
    settings: dict[str, set] = {}
    for path, value in _leaves(yaml.safe_load((REPO / "params.yaml").read_text())):
        if not isinstance(value, (dict, list)):
            settings.setdefault(path[-1], set()).add(value)
    disagreements = []
    for info in pkgutil.walk_packages(apogeenet.__path__, "apogeenet."):
        module = importlib.import_module(info.name)
        for name, function in inspect.getmembers(module, inspect.isfunction):
            if function.__module__ != module.__name__:
                continue
            for parameter in inspect.signature(function).parameters.values():
                default = parameter.default
                if (parameter.name in settings and default is not inspect.Parameter.empty and default is not None
                        and not isinstance(default, bool) and default not in settings[parameter.name]):
                    disagreements.append(f"{info.name}.{name}({parameter.name}={default!r}), params.yaml "
                                         f"{sorted(map(str, settings[parameter.name]))}")
    assert not disagreements, disagreements
