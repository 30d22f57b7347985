"""Data: the prepared-records format, label splits, the embedded digits demo and tf.data."""
