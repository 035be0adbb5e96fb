"""`wsi-prognosis encoders [name=NAME]`: what each registered encoder is and whether its weights are here."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig


def describe(name: str) -> dict[str, Any]:
    """One registry entry as plain data, with where its weights were looked for and what was found."""
    from wsi_prognosis.encoders import get_encoder
    from wsi_prognosis.encoders.weights import candidate_places

    spec = get_encoder(name)
    places = candidate_places(spec, None) if spec.weights is not None else []
    found = next((str(p) for _, p in places if p is not None), None)
    return {
        "name": spec.name, "kind": spec.kind, "summary": spec.summary, "construction": spec.construction,
        "embedding": spec.embedding, "dim": spec.dim, "input_px": spec.input_px, "mean": list(spec.mean),
        "std": list(spec.std), "mpp": spec.mpp, "licence": spec.licence,
        "weights": "random init / none" if spec.weights is None else (found or "ABSENT"),
        "looked_in": [d for d, _ in places], "fetch": spec.weights.fetch if spec.weights else "",
    }


def run(cfg: DictConfig) -> list[dict[str, Any]]:
    from wsi_prognosis.encoders import list_encoders

    names = [str(cfg.name)] if cfg.get("name") else list_encoders()
    rows = [describe(n) for n in names]
    if cfg.get("name"):
        for key, value in rows[0].items():
            print(f"{key:>13}: {value}")
        return rows
    print(f"{'name':<12} {'kind':<8} {'dim':>5} {'px':>4} {'µm/px':>6}  {'mean / std':<28} weights")
    for r in rows:
        norm = f"{tuple(round(v, 3) for v in r['mean'])} / {tuple(round(v, 3) for v in r['std'])}" if r["dim"] else "-"
        mpp = "any" if r["mpp"] is None else f"{r['mpp']:g}"
        weights = r["weights"] if r["weights"] != "ABSENT" else f"ABSENT ({r['fetch']})"
        print(f"{r['name']:<12} {r['kind']:<8} {r['dim']:>5} {r['input_px'] or '-':>4} {mpp:>6}  {norm:<28} {weights}")
        print(f"{'':<12} {r['summary']}; licence: {r['licence']}")
    print("\n`wsi-prognosis encoders name=NAME` shows one in full (construction, every place its weights are looked for).")
    return rows
