"""Class weights live with the classification kind (kinds/imbalance.py); this name stays for its importers."""

from prefix_registry.kinds.imbalance import class_counts, is_imbalanced, loss_weights

__all__ = ["class_counts", "is_imbalanced", "loss_weights"]
