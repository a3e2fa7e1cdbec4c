"""Paths the tests share: the repository root, wherever a test file sits below it."""

import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
