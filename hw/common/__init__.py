"""Pieces shared by several blocks: parameter checks and the requantizer."""
