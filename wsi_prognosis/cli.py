"""The entry point: `wsi-prognosis <stage> [key=value ...]`.

Thin on purpose: pick the stage, let Hydra compose `configs/<stage>.yaml` with the overrides
(and `--multirun`, `--help`, `--cfg job`), call the stage's `run(cfg)`. A stage module is imported
only when asked for, so `tile` never pays for importing torch.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
from collections.abc import Iterator, Sequence

STAGES: dict[str, str] = {
    "synth": "make a synthetic cohort with known ground truth (slides, manifest, clinical, truth)",
    "tile": "tissue mask, QC and aligned 10x/40x tile grids -> tiles/<slide_id>.h5",
    "embed": "run a frozen encoder over every tile -> features/<encoder>/<slide_id>.h5 (resumable, sharded)",
    "encoders": "list the tile encoders: preprocessing, embedding size, licence, whether the weights are here",
    "train": "train one ensemble member (use --multirun for a sweep of candidates)",
    "select": "pick the best k members per resolution -> a verified model bundle",
    "calibrate": "fix good/uncertain/poor thresholds on the tuning cohort -> a new bundle",
    "score": "score slides with a bundle -> scores.csv, patient_scores.csv, heatmaps, GeoJSON",
    "merge": "join the outputs of sharded score runs into one scores.csv",
    "analyze": "Kaplan-Meier, log-rank, Cox and C-index per cohort -> report.html, summary.json",
    "protocol": "lock the validation protocol (primary analysis, bundle, thresholds) before the external cohort",
    "plan": "events, patients and external cohorts the validation needs (Schoenfeld, resampled power curve)",
    "demo": "run the whole flow on a synthetic cohort",
    "review": "serve a scored batch to the browser: batch page + deep-zoom viewer with the heatmap (localhost)",
}

USAGE = "usage: wsi-prognosis <stage> [key=value ...] [--multirun] [--help]"


def _print_stages() -> None:
    print(USAGE)
    print("\nStages:")
    for name, what in STAGES.items():
        print(f"  {name:<10} {what}")
    print("\n`wsi-prognosis <stage> --help` shows a stage's configuration;"
          " override any value with key=value.")


# Arguments after which the run mode is not known without composing the config: a multirun, an explicit
# `hydra.mode`, or configs from outside the package (which might set `hydra.mode`).
_MODE_ARGUMENTS = ("--multirun", "-m", "--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn")


@contextlib.contextmanager
def _plain_run_without_mode_probe(args: Sequence[str]) -> Iterator[None]:
    """Skip Hydra's second composition of the whole config for a plain single run.

    Before a run, Hydra (1.3) composes the config once in multirun mode only to read
    `hydra.mode` (`Hydra.get_mode`), then again for the job: about 0.3 s of the `tile` stage's
    1.3 s. None of the packaged configs sets `hydra.mode` (tests/core/test_cli.py asserts it), so
    without `--multirun`, a `hydra.mode` override or an outside config folder the answer is RUN.
    Anything else, or a Hydra without this method, takes Hydra's own path.
    """
    try:
        from hydra._internal.hydra import Hydra
        from hydra.types import RunMode
    except ImportError:  # pragma: no cover - another Hydra layout: keep its behaviour
        yield
        return
    if (not hasattr(Hydra, "get_mode") or any(a in _MODE_ARGUMENTS or a.startswith(("--config", "hydra.mode", "+hydra.mode"))
                                              for a in args)):
        yield
        return
    original = Hydra.get_mode
    Hydra.get_mode = lambda self, config_name, overrides: RunMode.RUN  # type: ignore[method-assign]
    try:
        yield
    finally:
        Hydra.get_mode = original  # type: ignore[method-assign]


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to a stage. Returns the process exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        _print_stages()
        return 0
    if args[0] in {"-V", "--version"}:
        from wsi_prognosis import __version__

        print(f"wsi-prognosis {__version__}")
        return 0
    stage = args[0]
    if stage not in STAGES:
        print(f"wsi-prognosis: unknown stage {stage!r}.", file=sys.stderr)
        _print_stages()
        return 2
    import hydra  # deferred: `wsi-prognosis --help` stays instant
    from omegaconf import DictConfig

    from wsi_prognosis.errors import WsiPrognosisError

    module = importlib.import_module(f"wsi_prognosis.stages.{stage}")

    def task(cfg: DictConfig) -> object:
        try:
            return module.run(cfg)
        except WsiPrognosisError as exc:
            logging.getLogger(f"wsi_prognosis.{stage}").error("%s", exc)
            print(f"wsi-prognosis {stage}: error: {exc}", file=sys.stderr)
            raise SystemExit(2) from exc

    # Hydra names the job (log file, .hydra/ records) after the task function's module: name it after
    # the stage. Configs come from the installed package, wherever the command runs.
    task.__module__ = module.__name__
    saved_argv = sys.argv
    sys.argv = [f"wsi-prognosis-{stage}", *args[1:]]
    try:
        with _plain_run_without_mode_probe(args[1:]):
            hydra.main(config_path="pkg://wsi_prognosis.configs", config_name=stage, version_base="1.3")(task)()
    except SystemExit as exit_:
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 1
    finally:
        sys.argv = saved_argv
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
