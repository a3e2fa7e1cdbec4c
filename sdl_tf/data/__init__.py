"""Input data: the TFRecord schema and the tf.data pipelines that read it."""
