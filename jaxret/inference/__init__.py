"""A workdir's checkpoints, and a trained model restored from them for inference."""
