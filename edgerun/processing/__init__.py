"""Pure pre- and post-processing functions (numpy; Pillow only to decode and resize)."""
