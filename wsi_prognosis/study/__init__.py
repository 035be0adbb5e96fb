"""The validation study: sample-size planning (`plan`) and the locked analysis protocol (`protocol`).

    from wsi_prognosis.study.plan import schoenfeld_events, power_for_events, detectable_hr, cohorts_needed
    from wsi_prognosis.study.protocol import build_protocol, load_protocol, verify_scores

Pooled evidence and landmark survival live in `wsi_prognosis.survival` (pooled.py, landmarks.py),
because `analyze` computes them with or without a protocol.
"""
