"""Pretrained weights from local Hugging Face directories (safetensors, read with NumPy)."""
