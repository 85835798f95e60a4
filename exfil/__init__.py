"""Shared building blocks of exfil-detect: capture I/O, DNS wire format, features, CLI helpers."""
