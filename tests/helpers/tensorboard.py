"""Reading what training wrote to TensorBoard."""

import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator


def tensorboard_scalars(logdir):
    """(accumulator, {tag: {step: value}}) of the scalar summaries under `logdir`."""
    acc = event_accumulator.EventAccumulator(logdir, size_guidance={"tensors": 0})
    acc.Reload()
    # TF2 tf.summary.scalar writes tensor events.
    # Only scalars: histograms, images and text are tensor events too.
    return acc, {tag: {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)}
                 for tag in acc.Tags()["tensors"]
                 if acc.SummaryMetadata(tag).plugin_data.plugin_name == "scalars"}
