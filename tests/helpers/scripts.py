"""Imports a script of `scripts/` (not a package) as a module, for the tests of scripts."""

from __future__ import annotations

import importlib.util
import os

from tests.helpers.paths import REPO_ROOT

SCRIPTS_DIR = os.path.join(REPO_ROOT, "scripts")


def load_script(name: str):
    """Returns `scripts/<name>.py` loaded as the module `name`."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(SCRIPTS_DIR, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
