"""Test doubles for the board runtimes (RKLLM, RKNNLite). Tests only: never importable by rkvideo."""
