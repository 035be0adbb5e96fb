"""Hydra configuration tree (a package so `pkg://wsi_prognosis.configs` works after a plain install)."""
