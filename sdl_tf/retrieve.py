r"""Tag-based image retrieval: index images with a model, then query the index by tag.

    python -m sdl_tf.retrieve index --model=saved_models/sdl --images=photos/ --index=idx.npz
    python -m sdl_tf.retrieve query --index=idx.npz --tags="red circle,dog" [--word_vectors=...] \
        [--top=10]

Flags are the fields of `sdl_tf.serving.retrieval.IndexConfig` and `QueryConfig` (+ --tags);
the library is `sdl_tf.serving.retrieval.run_index` / `run_query`.
"""

from __future__ import annotations

from sdl_tf import config_flags


def define_flags() -> None:
    """Defines the index and query flags (entry point only)."""
    from absl import flags

    from sdl_tf.serving.retrieval import IndexConfig, QueryConfig

    config_flags.define_flags(IndexConfig)
    # --index is shared with IndexConfig; --tags is one comma-separated string (main splits it).
    config_flags.define_flags(QueryConfig, exclude=("index", "tags"))
    flags.DEFINE_string("tags", None, "query: comma-separated query tags.")


def main(argv):
    from absl import app, flags, logging

    from sdl_tf.serving import retrieval

    # TF/gensim INFO lines (signature renames, vector loading) drown the results.
    logging.set_verbosity(logging.WARNING)
    f = flags.FLAGS
    if len(argv) != 2 or argv[1] not in ("index", "query"):
        raise app.UsageError("usage: python -m sdl_tf.retrieve index|query [flags]")
    if argv[1] == "index":
        for name in ("model", "images", "index"):
            if not getattr(f, name):
                raise app.UsageError(f"index needs --{name}")
        retrieval.run_index(config_flags.config_from_flags(retrieval.IndexConfig, f))
    else:
        for name in ("index", "tags"):
            if not getattr(f, name):
                raise app.UsageError(f"query needs --{name}")
        tags = tuple(t.strip() for t in f.tags.split(",") if t.strip())
        retrieval.run_query(config_flags.config_from_flags(retrieval.QueryConfig, f, tags=tags))


def run() -> None:
    """Console-script entry point (`sdl-retrieve`)."""
    from sdl_tf import cli

    cli.run(main, define_flags)


if __name__ == "__main__":
    run()
