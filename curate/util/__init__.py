"""Helpers shared by every layer, one module per job (hashing, quoting, tokens, progress, text, assets)."""
