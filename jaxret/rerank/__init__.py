"""The slow model at inference: batched pair scoring, re-ranking of fast candidates."""
