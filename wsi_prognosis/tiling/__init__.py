"""Aligned multi-resolution tile grids and the HDF5 tile store (tiles/<slide_id>.h5).

`GridSpec` (pure geometry) imports nothing heavy; the store names load h5py on first use, so
code that only needs grids (e.g. to build a `slides.TileReader`) never imports it. `slides`
never imports `tiling`: `TileReader` takes any object with a GridSpec's read values.
"""

from typing import Any

from wsi_prognosis.tiling.grid import GridSpec

__all__ = ["GridSpec", "TileStore", "open_tile_store", "tile_store_path"]

_STORE_NAMES = {"TileStore", "TileStoreWriter", "open_tile_store", "tile_store_path"}


def __getattr__(name: str) -> Any:  # PEP 562: defer h5py until a store is used
    if name in _STORE_NAMES:
        from wsi_prognosis.tiling import store

        return getattr(store, name)
    raise AttributeError(f"module 'wsi_prognosis.tiling' has no attribute {name!r}")
