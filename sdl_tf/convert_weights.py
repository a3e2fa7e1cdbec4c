r"""Converts a timm / Alibaba-MIIL TResNet checkpoint to a Keras weights file.

    python -m sdl_tf.convert_weights --from=tresnet_m.pth --to=weights/tresnet_m.weights.h5 \
        [--arch=tresnet_m]

The conversion (accepted checkpoint formats and names, the one-to-one mapping checks) is
`sdl_tf.modeling.tresnet_weights.convert`. Use the output with
`--backbone=tresnet_m --weights=<the .weights.h5>`.
"""

from __future__ import annotations

import sys


def define_flags() -> None:
    """Defines --from, --to and --arch (entry point only)."""
    from absl import flags

    flags.DEFINE_string("from", None, "timm/MIIL TResNet checkpoint: .pth (etc.) or .safetensors.")
    flags.DEFINE_string("to", None, "Output Keras weights file (must end in .weights.h5).")
    flags.DEFINE_string("arch", "tresnet_m", "TResNet variant: tresnet_m, tresnet_l, tresnet_xl.")
    flags.mark_flag_as_required("from")
    flags.mark_flag_as_required("to")


def main(argv):
    del argv
    from absl import flags

    from sdl_tf.modeling import tresnet_weights

    f = flags.FLAGS
    try:
        notes = tresnet_weights.convert(f["from"].value, f.to, f.arch)
    except tresnet_weights.ConversionError as e:
        print(f"convert_weights: error: {e}", file=sys.stderr)
        return 1
    for note in notes:
        print(f"note: {note}")
    print(f"wrote {f.to} ({f.arch}); use --backbone={f.arch} --weights={f.to}")
    return 0


def run() -> None:
    """Console-script entry point (`sdl-convert-weights`)."""
    from sdl_tf import cli

    define_flags()
    cli.run(main)


if __name__ == "__main__":
    run()
