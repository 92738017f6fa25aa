"""The forward engine: one strategy per method, row-wise batches where each row carries its own prefix and head.

- `resident`: PrefixPool (bases loaded once each), ResidentBase, attach_adapter (adapter folder -> prefix).
- `attached`: AttachedPrefix, one task version ready to run, immutable.
- `methods`: one strategy per method, prefix tuning (key/values) or prompt and P-tuning (input embeddings).
- `backbones`: one adapter per kind of base, encoder (mean or [CLS] pooling) or decoder (last token).
- `batch`: rows of different prefixes stacked into one backbone input, each seeing what it sees alone.
- `engine`: Row(text, prefix); forward(rows) gives one head output per row; head_outputs(prefix, texts).
- `classification`: classify(prefix, texts) gives Predictions (the only softmax here; the engine is kind-agnostic).
"""
