"""The `tile` stage through the CLI: end to end, config composition, manifest errors, no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_module

from wsi_prognosis.cli import main
from wsi_prognosis.errors import ConfigurationError
from wsi_prognosis.tiling.pipeline import TilingConfig


def _console_script() -> list[str]:
    script = Path(sys.executable).parent / "wsi-prognosis"
    return [str(script)] if script.exists() else [sys.executable, "-m", "wsi_prognosis.cli"]


def test_cli_tiles_a_manifest_end_to_end(tmp_path, cmu_slide, slides_dir, manifest_writer):
    manifest = manifest_writer(tmp_path / "manifest.csv", [
        {"slide_id": "cmu", "path": cmu_slide},
        {"slide_id": "bad", "path": slides_dir / "not-a-slide.svs"},
    ])
    out = tmp_path / "tiles"
    result = subprocess.run([*_console_script(), "tile", f"manifest={manifest}", f"out={out}", "workers=1"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    summary = pd.read_csv(out / "summary.csv")
    assert summary.set_index("slide_id")["status"].to_dict() == {"cmu": "ok", "bad": "failed"}
    assert (out / "cmu.h5").is_file() and (out / "qc" / "cmu.png").is_file()
    record = json.loads((out / "run_tile.json").read_text())
    assert record["stage"] == "tile" and record["failed"] == 1 and record["inputs"]["manifest"]["sha256"]
    assert record["config"]["tiling"]["mpp_40x"] == 0.25
    assert (out / ".hydra" / "config.yaml").is_file()
    assert "slide/s" in result.stderr or "tile:" in result.stderr                # the progress bar


def test_tile_stage_imports_neither_torch_nor_pandas(tmp_path, cmu_slide, manifest_writer):
    manifest = manifest_writer(tmp_path / "m.csv", [{"slide_id": "cmu", "path": cmu_slide}])
    code = (
        "import sys\nfrom wsi_prognosis.cli import main\n"
        f"rc = main(['tile', 'manifest={manifest}', 'out={tmp_path / 'out'}', 'tiling.qc_thumbnails=false'])\n"
        "print(rc, 'torch' in sys.modules, 'lightning' in sys.modules, 'pandas' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.split()[-4:] == ["0", "False", "False", "False"], result.stderr
    assert (tmp_path / "out" / "cmu.h5").is_file()


@pytest.mark.parametrize("problem,message", [
    ("duplicate", "duplicate slide_id"),
    ("missing_column", "missing required column"),
])
def test_manifest_errors_stop_before_any_work(tmp_path, cmu_slide, capsys, problem, message):
    lines = ["slide_id,patient_id,path,cohort", f"a,p1,{cmu_slide},training", f"a,p2,{cmu_slide},training"]
    if problem == "missing_column":
        lines = ["slide_id,path,cohort", f"a,{cmu_slide},training"]
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert main(["tile", f"manifest={manifest}", f"out={out}"]) == 2
    assert message in capsys.readouterr().err
    assert not list(out.glob("*.h5")) and not (out / "summary.csv").exists()


def test_unknown_manifest_column_warns_and_tiles(tmp_path, cmu_slide, capsys):
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"slide_id,patient_id,path,cohort,scanner\na,p1,{cmu_slide},training,GT450\n")
    with pytest.warns(UserWarning, match="unknown column"):
        code = main(["tile", f"manifest={manifest}", f"out={tmp_path / 'out'}", "tiling.qc_thumbnails=false"])
    assert code == 0 and (tmp_path / "out" / "a.h5").is_file()


def test_bad_config_values_name_the_key(tmp_path, cmu_slide, capsys):
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"slide_id,patient_id,path,cohort\na,p1,{cmu_slide},training\n")
    assert main(["tile", f"manifest={manifest}", f"out={tmp_path}", "+tiling.tile_px_40x=200"]) == 2
    assert "tiling.resolutions.40x" in capsys.readouterr().err
    assert main(["tile", f"manifest={manifest}", f"out={tmp_path}", "workers=0"]) == 2
    assert "workers=0" in capsys.readouterr().err


def test_default_config_composes_into_the_documented_defaults():
    with initialize_config_module("wsi_prognosis.configs", version_base="1.3"):
        cfg = compose("tile", overrides=["manifest=m.csv", "out=o"])
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=False)
    assert set(plain) >= {"manifest", "out", "workers", "annotations", "slides", "tissue", "tiling"}
    config = TilingConfig.from_mapping(tiling=plain["tiling"], tissue=plain["tissue"], slides=plain["slides"])
    assert config == TilingConfig()                    # YAML defaults == code defaults
    assert [(r.name, r.mpp, r.tile_px) for r in config.resolutions] == [("10x", 1.0, 224), ("40x", 0.25, 224)]
    assert (config.min_tissue_fraction, config.tissue.mask_mpp, config.max_upsample) == (0.5, 8.0, 1.05)


def test_command_line_forms_of_the_grids():
    with initialize_config_module("wsi_prognosis.configs", version_base="1.3"):
        cfg = compose("tile", overrides=["manifest=m.csv", "out=o", "tiling.tile_px=64", "tiling.mpp_40x=0.5",
                                         "slides.max_upsample=2.0"])
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg)
    config = TilingConfig.from_mapping(tiling=plain["tiling"], tissue=plain["tissue"], slides=plain["slides"])
    assert [(r.name, r.mpp, r.tile_px) for r in config.resolutions] == [("10x", 1.0, 64), ("40x", 0.5, 64)]
    assert config.max_upsample == 2.0
    only_10x = TilingConfig.from_mapping(tiling={"resolutions": ["10x"]})
    assert [r.name for r in only_10x.resolutions] == ["10x"]
    with pytest.raises(ConfigurationError, match="tiling.mpp_20x"):
        TilingConfig.from_mapping(tiling={"resolutions": ["10x"], "mpp_20x": 0.5})
    with pytest.raises(ConfigurationError, match="tiling.colour"):
        TilingConfig.from_mapping(tiling={"colour": 1})


def test_tile_spec_round_trip():
    demo = {"resolutions": {"10x": {"mpp": 1.0, "tile_px": 64}, "40x": {"mpp": 0.25, "tile_px": 64}},
            "min_tissue_fraction": 0.5, "tissue": {"mask_mpp": 8.0}}
    config = TilingConfig.from_tile_spec(demo)
    assert config.base.name == "10x" and config.base.tile_um == 64.0
    assert TilingConfig.from_tile_spec(config.tile_spec()) == config
