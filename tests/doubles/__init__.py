"""Test doubles (runtimes, encoders, a librkllmrt.so stub). Tests only: never importable by rkvideo."""
