"""Task kinds: what a prediction is, which metrics judge it, which one decides, which drift signals apply."""
