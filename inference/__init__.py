"""The forward engine: one strategy per method, row-wise batches where each row carries its own prefix and head."""
