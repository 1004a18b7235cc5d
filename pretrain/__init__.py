"""Pretraining of the embedded `tiny` base model on generated shapes (no pipeline stage)."""
