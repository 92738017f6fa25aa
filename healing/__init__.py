"""Healing: acting on verdicts. The retrain policy, where its labels come from, and the decision it returns."""
