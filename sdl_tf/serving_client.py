r"""Tags images through a running TF Serving model server (no TensorFlow needed on the client).

    python -m sdl_tf.serving_client --server=http://localhost:8501 --model_name=sdl \
        --images=a.jpg,b.png [--version=1] [--extra_labels=new_tags.txt | \
        --extra_labels=zebra,kite --word_vectors=vectors.vec]

Flags are the fields of `sdl_tf.serving.client.ClientConfig`; the REST protocol and the
`ServingClient` library are in `sdl_tf.serving.client`.
"""

from __future__ import annotations

from sdl_tf import config_flags, errors


def define_flags() -> None:
    """Defines the client flags (entry point only): ClientConfig's fields."""
    from sdl_tf.serving.client import ClientConfig

    config_flags.define_flags(ClientConfig)


def main(argv):
    del argv
    import numpy as np

    from sdl_tf.serving import client as client_lib
    from sdl_tf.serving import tagger

    f = config_flags.config_from_flags(client_lib.ClientConfig)
    client = client_lib.ServingClient(f.server, f.model_name, f.version, f.timeout)
    paths = tagger.list_images(f.images)
    data = []
    for p in paths:
        contents, err = tagger.read_bytes(p)
        if err:
            raise errors.SDLError(err)
        data.append(contents)
    results = client.tag(data)
    extra = None
    if f.extra_labels:
        names, vectors = tagger.extra_label_vectors(f.extra_labels, None, f.word_vectors)
        extra = names, client.score_labels(data, vectors)["scores"]
    for i, (path, res) in enumerate(zip(paths, results, strict=True)):
        if not res["ok"]:
            print(f"{tagger.image_id(path)}: ERROR {res['error']}")
            continue
        line = ", ".join(f"{t['name']}{'*' if t['unseen'] else ''} {t['score']:.3f} "
                         f"(row {t['row'] + 1})" for t in res["tags"])
        print(f"{tagger.image_id(path)}: {line}")
        if extra is not None:
            names, scores = extra
            order = np.argsort(-scores[i])
            print("  extra: " + ", ".join(f"{names[j]}+ {scores[i][j]:.3f}" for j in order))


def run() -> None:
    """Console-script entry point (`sdl-serving-client`)."""
    from sdl_tf import cli

    cli.run(main, define_flags, quiet=True)  # `... | head` ends quietly too


if __name__ == "__main__":
    run()
