"""Dataset converters: raw dataset files -> sharded TFRecords + a label space."""
