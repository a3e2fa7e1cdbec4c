"""Runs a project command with the tests' `tiny` backbone registered (for subprocess tests).

    python -m tests.helpers.run_with_tiny sdl_tf.train --backbone=tiny --flags...

Registers `tests.helpers.tiny_backbone`, then runs the command module as `python -m <module>`
would (`runpy`, as `__main__`), so its flags, messages and exit status are the command's own.
"""

import runpy
import sys

from tests.helpers import tiny_backbone


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m tests.helpers.run_with_tiny <module> [flags...]")
    module = sys.argv[1]
    tiny_backbone.register()
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
