"""Coarse foreground maps from image-level labels."""
