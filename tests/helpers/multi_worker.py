"""One worker of the MultiWorkerMirroredStrategy test (run as a subprocess by the test).

    python -m tests.helpers.multi_worker <task_index> <port0,port1> <out.npz>

Builds `sdl_tf.training.task.SDLTask` under `loop.get_strategy("multi_worker")` (cluster from
TF_CONFIG), feeds this worker its half of fixed global batches and writes the per-step losses
and final weights.
"""

import json
import os
import sys


def global_batches(num_steps=3, global_batch=8, size=32, num_seen=6, dim=16):
    """Fixed synthetic data shared by the workers and the single-device reference."""
    import numpy as np

    rng = np.random.default_rng(42)
    images = rng.integers(0, 256, (num_steps, global_batch, size, size, 3), dtype=np.uint8)
    targets = np.where(rng.random((num_steps, global_batch, num_seen)) < 0.3, 1.0, 0.0)
    targets[:, :, 0] = np.where(targets.sum(-1) == 0, 1.0, targets[:, :, 0])
    vectors = rng.normal(size=(num_seen, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return images, targets.astype(np.float32), vectors


def config():
    from sdl_tf.config import ModelConfig, TrainConfig

    # dropout 0: dropout masks are per replica, so they could not match the one-device run.
    return TrainConfig(model_dir="unused", batch_size=8, learning_rate=1e-3,
                       model=ModelConfig(backbone="tiny", weights="none", image_size=32,
                                         num_rows=2, dim=16, dropout=0.0))


def main():
    index, ports, out = int(sys.argv[1]), sys.argv[2].split(","), sys.argv[3]
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"localhost:{p}" for p in ports]},
        "task": {"type": "worker", "index": index},
    })
    import numpy as np
    import tensorflow as tf

    from sdl_tf.training import loop
    from sdl_tf.training.task import SDLTask
    from tests.helpers import tiny_backbone

    tiny_backbone.register()  # config() builds the tests' `tiny` backbone
    strategy = loop.get_strategy("multi_worker")
    images, targets, vectors = global_batches()
    task = SDLTask(config(), vectors, strategy, total_steps=10)
    initial = [w.numpy() for w in task.model.weights]
    half = images.shape[1] // 2

    def dataset_fn(ctx):
        # Worker i gets rows [i*half, (i+1)*half) of every global batch.
        lo = ctx.input_pipeline_id * half
        return tf.data.Dataset.from_tensor_slices(
            (images[:, lo:lo + half], targets[:, lo:lo + half]))

    losses = []
    for batch in strategy.distribute_datasets_from_function(dataset_fn):
        losses.append(float(task.train_step(batch)["loss"]))
    arrays = {f"w{i}": w.numpy() for i, w in enumerate(task.model.weights)}
    arrays.update({f"init{i}": w for i, w in enumerate(initial)})
    np.savez(out, losses=np.array(losses), is_chief=loop.is_chief(strategy), **arrays)


if __name__ == "__main__":
    main()
