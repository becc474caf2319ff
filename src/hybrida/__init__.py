"""hybrida."""
