"""Aligned multi-resolution tile grids and the HDF5 tile store (tiles/<slide_id>.h5).

`GridSpec` (pure geometry) imports nothing heavy; the store names load h5py on first use, so
readers that only need grids (e.g. `slides.TileReader`) never import it.
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
