"""Packaged real datasets written as hybrida observation files: :mod:`.enso` (NOAA CPC Nino SST), :mod:`.nile`."""
