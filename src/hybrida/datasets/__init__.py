"""Packaged real datasets written as hybrida observation files."""
