"""Pieces of the Pensieve MLX worker (python_bridge/mlx_inference.py)."""

PROTOCOL_VERSION = 1
