"""Small demo datasets for the training tests, generated once per test session."""

from __future__ import annotations

import os


def demo_dataset(tmp_path_factory, num_train: int = 96, num_val: int = 24, num_test: int = 32,
                 image_size: int = 32, train_shards: int = 2, max_objects: int | None = None,
                 swap_fraction: float | None = None) -> str:
    """Writes (once per session and parameters) a tiny `data_prep.demo` set; returns its dir.

    Lives under pytest's session base temp dir, so every test module shares it.
    """
    from data_prep.demo import DemoConfig, prepare

    extra = {k: v for k, v in (("max_objects", max_objects), ("swap_fraction", swap_fraction))
             if v is not None}
    name = (f"sdl_demo_{num_train}_{num_val}_{num_test}_{image_size}_{train_shards}"
            + "".join(f"_{k}{v}" for k, v in sorted(extra.items())))
    out = os.path.join(str(tmp_path_factory.getbasetemp()), name)
    if not os.path.isfile(os.path.join(out, "test-summary.json")):
        prepare(DemoConfig(output_dir=out, num_train=num_train, num_val=num_val,
                           num_test=num_test, image_size=image_size, vector_dim=16,
                           num_samples=0, train_shards=train_shards, eval_shards=1,
                           num_workers=1, progress=False, **extra))
    return out
