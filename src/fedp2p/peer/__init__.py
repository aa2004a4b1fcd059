"""A peer: its round loop, its neighbours, and how it learns from them."""
