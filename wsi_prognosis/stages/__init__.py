"""One thin module per stage: validate the config into typed objects, call the library, write outputs.

Each module exposes `run(cfg: DictConfig) -> object` and is imported only when its stage runs.
"""
