"""The forward engine: one strategy per method, row-wise batches where each row carries its own prefix and head.

    resident.py        PrefixPool (bases loaded once each), ResidentBase, attach_adapter (adapter folder -> prefix)
    attached.py        AttachedPrefix: one task version ready to run, immutable
    methods.py         one strategy per method: prefix tuning (key/values) or prompt / P-tuning (input embeddings)
    backbones.py       one adapter per kind of base: encoder (mean or [CLS] pooling) or decoder (last token)
    batch.py           rows of different prefixes stacked into one backbone input, each seeing what it sees alone
    engine.py          Row(text, prefix); forward(rows) -> one head output per row; head_outputs(prefix, texts)
    classification.py  classify(prefix, texts) -> Predictions (the softmax lives here, not in the engine)
"""
