r"""Tags images with an exported SavedModel or a training run directory (open vocabulary).

    python -m sdl_tf.predict --model=saved_models/sdl --images=demo_out/images \
        [--extra_labels=zebra,red\ car --word_vectors=vectors.vec | --extra_labels=new_tags.txt] \
        [--top_k=5] [--output_dir=predictions]

Flags are the fields of `sdl_tf.serving.tagger.PredictConfig`; the library is
`sdl_tf.serving.tagger.run_predict`.
"""

from __future__ import annotations

from sdl_tf import config_flags, errors


def define_flags() -> None:
    """Defines the predict flags (entry point only): PredictConfig's fields."""
    from sdl_tf.serving.tagger import PredictConfig

    config_flags.define_flags(PredictConfig)


def main(argv):
    del argv
    from sdl_tf.serving import tagger

    config = config_flags.config_from_flags(tagger.PredictConfig)
    results = tagger.run_predict(config)
    if results and all(r.error for r in results):
        # run_predict has printed each image's error above.
        raise errors.SDLError("no image could be decoded")


def run() -> None:
    """Console-script entry point (`sdl-predict`)."""
    from sdl_tf import cli

    cli.run(main, define_flags, quiet=True)


if __name__ == "__main__":
    run()
