"""Aligned multi-resolution tile grids and the HDF5 tile store (tiles/<slide_id>.h5)."""

from wsi_prognosis.tiling.grid import GridSpec
from wsi_prognosis.tiling.store import TileStore, open_tile_store, tile_store_path

__all__ = ["GridSpec", "TileStore", "open_tile_store", "tile_store_path"]
