"""Training learns: a few hundred steps of the real training loop on a small generated set lower
the loss and rank unseen labels far better than the seeded random baseline (same protocol)."""

import numpy as np

from sdl_tf.config import DataConfig, EvalConfig, ModelConfig, TrainConfig
from sdl_tf.evaluation import evaluator
from sdl_tf.training import trainer
from tests.helpers.demo_data import demo_dataset
from tests.helpers.tensorboard import tensorboard_scalars


def test_training_lowers_loss_and_beats_random_on_unseen_labels(tmp_path_factory, tmp_path):
    # 1-3 objects per image: at 32 px the demo's small grid objects would be a few pixels.
    data_dir = demo_dataset(tmp_path_factory, num_train=640, num_val=16, num_test=120,
                            image_size=32, train_shards=2, max_objects=3, swap_fraction=0.0)
    model_dir = tmp_path / "run"
    config = TrainConfig(
        model_dir=str(model_dir),
        data=DataConfig(data_dir=data_dir, val_split="none", shuffle_buffer=640, augment=False),
        model=ModelConfig(backbone="tiny", weights="none", image_size=32, num_rows=2, dim=16,
                          dropout=0.0),
        epochs=8, batch_size=16, learning_rate=3e-3, warmup_fraction=0.1, weight_decay=1e-4,
        checkpoint_every_steps=1000, log_every_steps=10, eval_batch_size=64, seed=0,
    )
    result = trainer.train(config, progress=False)
    assert result["status"] == "finished" and result["step"] == 320  # 640 // 16 * 8

    _, train = tensorboard_scalars(str(model_dir / "logs" / "train"))
    loss = [train["loss/total"][s] for s in sorted(train["loss/total"])]
    first, last = np.mean(loss[:3]), np.mean(loss[-3:])
    assert last < 0.7 * first, (first, last)

    learned = evaluator.evaluate(EvalConfig(model_dir=str(model_dir), split="test"),
                                  progress=False)
    chance = evaluator.evaluate(
        EvalConfig(model_dir=str(model_dir), split="test", baseline="random", seed=0,
                   output_dir=str(tmp_path / "random")), progress=False)
    zsl, zsl_random = learned["zsl"]["mAP"], chance["zsl"]["mAP"]
    gzsl, gzsl_random = learned["gzsl"]["mAP"], chance["gzsl"]["mAP"]
    # Unseen labels were never trained on: they rank well only through the word vectors.
    # Measured (seed 0, 2 CPU cores): ZSL mAP 54 vs 24 random, GZSL 28 vs 12.
    assert zsl > zsl_random + 20, (zsl, zsl_random)
    assert gzsl > gzsl_random + 10, (gzsl, gzsl_random)
