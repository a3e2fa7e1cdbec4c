"""Small training configs shared by the training and validation tests (the tiny backbone)."""

from __future__ import annotations

from sdl_tf.config import DataConfig, ModelConfig, TrainConfig


def tiny_model(**kw) -> ModelConfig:
    """The tests' tiny CNN at 32 px, M = 2, d = 16 (fields overridable)."""
    base = dict(backbone="tiny", weights="none", image_size=32, num_rows=2, dim=16)
    base.update(kw)
    return ModelConfig(**base)


def tiny_config(data_dir: str, model_dir, **kw) -> TrainConfig:
    """Two short epochs on a demo set (`tests.helpers.demo_data`), logs every 2 steps."""
    base = dict(
        model_dir=str(model_dir),
        data=DataConfig(data_dir=data_dir, shuffle_buffer=64, cutout=0.25),
        model=tiny_model(),
        epochs=2, batch_size=16, learning_rate=1e-3, checkpoint_every_steps=4,
        log_every_steps=2, eval_batch_size=32,
    )
    base.update(kw)
    return TrainConfig(**base)
