"""rkvideo: video recordings and photos to searchable text with vision-language models on RK3588 NPUs."""
__version__ = "0.1.0"
