"""Compiled helpers outside the transcoder (built by setup.py like the transcoder's kernel)."""
