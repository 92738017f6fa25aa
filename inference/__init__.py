"""The forward engine: one strategy per method, row-wise batches where each row carries its own prefix and head.

- `resident`: PrefixPool (bases loaded once each), ResidentBase, attach_adapter (adapter folder -> prefix).
- `attached`: AttachedPrefix, one task version ready to run, immutable.
- `methods`: one strategy per method, prefix tuning (key/values) or prompt and P-tuning (input embeddings).
- `backbones`: one adapter per kind of base, encoder (mean or [CLS] pooling) or decoder (last token).
- `batch`: rows of different prefixes stacked into one backbone input, each seeing what it sees alone.
- `engine`: Row(text, prefix); forward(rows) gives one head output per row; head_outputs(prefix, texts).
- `precision`: Precision (fp32, bf16, int8, auto), what this CPU runs fast, the torch runners (fp32, bf16 autocast).
- `onnx_backbone`: the int8 runner, the backbone exported once to ONNX and quantised by ONNX Runtime (cached).
- `classification`: classify(prefix, texts) gives Predictions (the only softmax here; the engine is kind-agnostic).
"""
