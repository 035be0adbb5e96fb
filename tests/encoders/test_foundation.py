"""The named pathology foundation encoders, without downloads.

For each name, random weights are written in that model's published state-dict layout (the key names and
shapes its model card's loading code expects, in the published file type) and loaded strictly through
`load_encoder(name, weights=PATH)`. The models are 0.3-1.1 billion parameters, so each is built here at
depth 1 with its true width, heads, MLP, LayerScale and register tokens: the per-block names and shapes are
the published ones, only the block count differs. The renaming to published names in this file is written
independently of the loaders (Phikon-v2: timm -> transformers Dinov2Model; CONCH v1.5: the 224-px position
grid of the release).
"""

from __future__ import annotations

import re
import socket
from dataclasses import replace
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from safetensors.torch import save_file

from wsi_prognosis.cli import main
from wsi_prognosis.encoders import EmbedderConfig, TileEmbedder, check_tile_mpp, get_encoder, list_encoders, load_encoder
from wsi_prognosis.encoders import registry
from wsi_prognosis.encoders.runtime import cache_dir
from wsi_prognosis.encoders.weights import locate_weights
from wsi_prognosis.errors import EncoderError

FOUNDATION = ["uni", "uni2-h", "virchow2", "h-optimus-0", "h-optimus-1", "phikon-v2", "gigapath", "conch-v1.5"]
DEPTH = 1
# name -> (published file name, Hugging Face repo)
PUBLISHED = {
    "uni": ("pytorch_model.bin", "MahmoodLab/UNI"),
    "uni2-h": ("pytorch_model.bin", "MahmoodLab/UNI2-h"),
    "virchow2": ("pytorch_model.bin", "paige-ai/Virchow2"),
    "h-optimus-0": ("pytorch_model.bin", "bioptimus/H-optimus-0"),
    "h-optimus-1": ("pytorch_model.bin", "bioptimus/H-optimus-1"),
    "phikon-v2": ("model.safetensors", "owkin/phikon-v2"),
    "gigapath": ("pytorch_model.bin", "prov-gigapath/prov-gigapath"),
    "conch-v1.5": ("pytorch_model_vision.bin", "MahmoodLab/conchv1_5"),
}
DIMS = {"uni": 1024, "uni2-h": 1536, "virchow2": 2560, "h-optimus-0": 1536, "h-optimus-1": 1536, "phikon-v2": 1024,
        "gigapath": 1536, "conch-v1.5": 768}


def _shallow_build(name: str):
    return partial(get_encoder(name).build, depth=DEPTH)


@pytest.fixture
def shallow(monkeypatch):
    """The registry's foundation entries, built at depth 1 (everything else as registered)."""
    for name in FOUNDATION:
        full = registry._REGISTRY[name]
        monkeypatch.setitem(registry._REGISTRY, name, lambda full=full: replace(full(), build=partial(full().build,
                                                                                                       depth=DEPTH)))


def _to_dinov2_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ViT tensors under transformers' Dinov2Model names, as owkin/phikon-v2's model.safetensors holds them."""
    block = {"norm1": "norm1", "norm2": "norm2", "attn.proj": "attention.output.dense", "mlp.fc1": "mlp.fc1",
             "mlp.fc2": "mlp.fc2"}
    out = {"embeddings.mask_token": torch.zeros(1, state["cls_token"].shape[-1])}
    for key, value in state.items():
        if key == "cls_token":
            out["embeddings.cls_token"] = value
        elif key == "pos_embed":
            out["embeddings.position_embeddings"] = value
        elif key.startswith("patch_embed.proj."):
            out["embeddings.patch_embeddings.projection." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("norm."):
            out["layernorm." + key.rsplit(".", 1)[1]] = value
        else:
            _, layer, rest = key.split(".", 2)
            prefix = f"encoder.layer.{layer}."
            module, param = rest.rsplit(".", 1)
            if module == "attn.qkv":
                for which, part in zip(("query", "key", "value"), value.chunk(3, dim=0)):
                    out[f"{prefix}attention.attention.{which}.{param}"] = part.clone()
            elif module in ("ls1", "ls2"):
                out[f"{prefix}layer_scale{module[-1]}.lambda1"] = value
            else:
                out[f"{prefix}{block[module]}.{param}"] = value
    return out


def _dino_pos_embed(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """What CONCH v1.5's own forward adds at 448 px: the 14 x 14 grid interpolated bicubically with a scale
    factor of (grid + 0.1) / 14, the class entry unchanged."""
    cls, patches = pos[:, :1], pos[:, 1:]
    side = int(patches.shape[1] ** 0.5)
    patches = patches.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, scale_factor=((grid + 0.1) / side, (grid + 0.1) / side), mode="bicubic")
    return torch.cat([cls, patches.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)], dim=1)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """name -> (file in the published layout, the depth-1 network those random weights come from, its reference
    forward on normalised pixels)."""
    root = tmp_path_factory.mktemp("published")
    made = {}
    for seed, name in enumerate(FOUNDATION):
        torch.manual_seed(seed)
        source = _shallow_build(name)().eval()
        with torch.no_grad():  # LayerScale at its 1e-5 init would leave the class token almost input-independent
            for key, value in source.state_dict().items():
                if key.endswith(("ls1.gamma", "ls2.gamma")):
                    value.uniform_(0.5, 1.5)
        filename, _ = PUBLISHED[name]
        folder = root / name
        folder.mkdir()
        path = folder / filename
        reference = source
        if name == "virchow2":          # the release is the bare timm ViT; the embedding is computed around it
            torch.save(source.trunk.state_dict(), path)
        elif name == "phikon-v2":
            save_file(_to_dinov2_names(source.state_dict()), str(path))
        elif name == "conch-v1.5":      # the release holds the 224-px position grid (1 + 14 * 14 entries)
            state = source.state_dict()
            state["trunk.pos_embed"] = torch.randn(1, 1 + 14 * 14, 1024) * 0.02
            torch.save(state, path)
            with torch.no_grad():
                source.trunk.pos_embed.copy_(_dino_pos_embed(state["trunk.pos_embed"], 28))
        else:
            torch.save(source.state_dict(), path)
        made[name] = (path, reference)
    return made


def _tiles(px: int, n: int = 2) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(n, px, px, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", FOUNDATION)
def test_the_published_layout_loads_strictly_and_gives_the_documented_embedding(name, published, shallow):
    path, reference = published[name]
    spec = get_encoder(name)
    encoder = load_encoder(name, weights=path)
    assert encoder.weights_path == path and encoder.identity["dim"] == spec.dim == DIMS[name]
    x = torch.randn(2, 3, spec.input_px, spec.input_px)
    with torch.no_grad():
        torch.testing.assert_close(encoder.model(x), reference(x), atol=1e-5, rtol=1e-5)  # every tensor in place
    tiles = _tiles(spec.input_px)
    features = TileEmbedder(encoder, spec.input_px, EmbedderConfig(runtime="torch")).embed(tiles)
    assert features.shape == (2, DIMS[name]) and np.isfinite(features).all()
    assert np.abs(features[0] - features[1]).max() > 1e-4


def test_virchow2_embeds_the_class_token_and_the_mean_of_the_patch_tokens(published, shallow):
    encoder = load_encoder("virchow2", weights=published["virchow2"][0])
    trunk = encoder.model.trunk
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        tokens = trunk.forward_features(x)
        embedding = encoder.model(x)
    assert tokens.shape == (2, 1 + 4 + 16 * 16, 1280)          # class, 4 registers, 256 patches
    torch.testing.assert_close(embedding[:, :1280], tokens[:, 0])
    torch.testing.assert_close(embedding[:, 1280:], tokens[:, 5:].mean(1))


# (file of, given to, the tensor the error must name first)
WRONG = [
    ("uni", "virchow2", "tensor 'cls_token' has shape (1, 1, 1024) where virchow2"),       # width 1024 vs 1280
    ("virchow2", "uni", "tensor 'cls_token' has shape (1, 1, 1280) where uni"),
    ("uni2-h", "h-optimus-0", "tensor 'reg_token' has shape (1, 8, 1536) where h-optimus-0"),  # 8 vs 4 registers
    ("h-optimus-0", "gigapath", "tensor 'pos_embed' has shape (1, 256, 1536) where gigapath"),  # patch 14 vs 16
    ("uni", "phikon-v2", "missing 'embeddings.cls_token'"),                                     # timm vs transformers names
    ("phikon-v2", "uni", "missing 'cls_token'"),
    ("uni", "conch-v1.5", "missing 'trunk.cls_token'"),
    ("conch-v1.5", "uni", "missing 'cls_token'"),
]


@pytest.mark.parametrize("source,target,tensor", WRONG)
def test_a_file_of_another_model_is_refused_naming_its_first_mismatched_tensor(source, target, tensor, published,
                                                                               shallow):
    path = published[source][0]
    with pytest.raises(EncoderError) as error:
        load_encoder(target, weights=path)
    message = str(error.value)
    assert str(path) in message and f"{target} (" in message and "Fix: give" in message
    assert tensor in message, message


def test_a_shallower_file_is_refused_naming_the_missing_block(published, monkeypatch):
    full = registry._REGISTRY["uni"]
    monkeypatch.setitem(registry._REGISTRY, "uni", lambda: replace(full(), build=partial(full().build, depth=2)))
    with pytest.raises(EncoderError, match=r"missing 'blocks\.1\.norm1\.weight'"):
        load_encoder("uni", weights=published["uni"][0])


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.mark.parametrize("name", FOUNDATION)
def test_absent_weights_name_every_place_and_the_fetch_command(name, empty_hf_cache, shallow):
    filename, repo = PUBLISHED[name]
    spec = get_encoder(name)
    with pytest.raises(EncoderError) as error:
        load_encoder(name)
    message = str(error.value)
    assert f"the local Hugging Face cache ({repo}/{filename})" in message
    assert f"hf download {repo} {filename}" in message and "never downloaded" in message
    if spec.weights.gated:
        assert "gated" in message and f"https://huggingface.co/{repo}" in message
    with pytest.raises(EncoderError, match=r"looked in: encoder.weights=.*nothing\.bin"):
        load_encoder(name, weights=empty_hf_cache / "nothing.bin")


def _cache_file(cache, repo: str, filename: str, source) -> None:
    """A file laid out as `hf download` leaves it: refs/main names a snapshot holding the file."""
    folder = cache / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    (folder / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (folder / "snapshots" / ("0" * 40) / filename).write_bytes(source.read_bytes())


def test_weights_are_found_in_the_local_hugging_face_cache_in_either_spelling(published, empty_hf_cache, shallow):
    # timm's `hf-hub:MahmoodLab/uni` caches under the lower-case spelling of the MahmoodLab/UNI repo
    _cache_file(empty_hf_cache, "MahmoodLab/uni", "pytorch_model.bin", published["uni"][0])
    _cache_file(empty_hf_cache, "owkin/phikon-v2", "model.safetensors", published["phikon-v2"][0])
    for name in ("uni", "phikon-v2"):
        encoder = load_encoder(name)
        assert str(empty_hf_cache) in str(encoder.weights_path)
        assert encoder.weights_sha256 == locate_weights(get_encoder(name), published[name][0])[1]


def test_the_encoders_stage_lists_every_name_with_licence_px_mpp_and_dim_without_the_network(capsys, monkeypatch,
                                                                                           empty_hf_cache):
    def no_network(*args, **kwargs):
        raise AssertionError("a weights lookup tried the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    assert main(["encoders"]) == 0
    out = capsys.readouterr().out
    for name in list_encoders():
        spec = get_encoder(name)
        if spec.kind != "frozen":
            continue
        mpp = "any" if spec.mpp is None else f"{spec.mpp:g}"
        assert re.search(rf"^{re.escape(name)}\s+frozen\s+{spec.dim}\s+{spec.input_px}\s+{re.escape(mpp)}\s", out, re.M), name
        assert spec.licence in out
    for name in FOUNDATION:
        filename, repo = PUBLISHED[name]
        assert f"hf download {repo} {filename}" in out  # absent here: the table says how to fetch them


@pytest.mark.parametrize("name", sorted(set(list_encoders())))
def test_every_encoder_has_a_config_that_composes(name):
    with initialize_config_module(config_module="wsi_prognosis.configs", version_base="1.3"):
        cfg = compose(config_name="embed", overrides=["tiles=/tmp/t", "out=/tmp/x", f"encoder={name}"])
    assert cfg.encoder.name == name and cfg.encoder.weights is None


def test_a_grid_at_another_mpp_is_refused_with_both_values_and_the_tile_command():
    uni = get_encoder("uni")
    with pytest.raises(EncoderError) as error:
        check_tile_mpp(uni, 0.25, "40x")
    message = str(error.value)
    assert "encoder uni was trained at 0.5 µm/px but the 40x tiles are 0.25 µm/px" in message
    assert "wsi-prognosis tile manifest=CSV out=DIR tiling.mpp_40x=0.5" in message
    check_tile_mpp(uni, 0.5, "40x")
    check_tile_mpp(uni, 0.51, "40x")                       # 2 %: another scanner's 20x
    with pytest.raises(EncoderError, match="10x tiles are 1 µm/px"):
        check_tile_mpp(uni, 1.0, "10x")
    with pytest.raises(EncoderError):
        check_tile_mpp(uni, 0.53, "40x")                   # 6 %: outside the 5 % tolerance


def test_virchow2_fits_each_magnification_it_was_trained_at():
    virchow2 = get_encoder("virchow2")
    for mpp in (2.0, 1.0, 0.5, 0.25, 0.252):
        check_tile_mpp(virchow2, mpp, "10x")
    with pytest.raises(EncoderError, match=r"trained at 0.5 µm/px \(also 2, 1, 0.25\) but the 10x tiles are 0.7"):
        check_tile_mpp(virchow2, 0.7, "10x")


def test_encoders_without_a_trained_mpp_fit_any_grid():
    for name in ("lite0", "random-cnn", "random-vit-s"):
        check_tile_mpp(get_encoder(name), 0.25, "40x", tile_px=224)
        check_tile_mpp(get_encoder(name), 1.0, "10x", tile_px=64)


def test_tiles_far_from_the_input_px_are_refused_since_resizing_changes_the_seen_mpp():
    conch = get_encoder("conch-v1.5")
    with pytest.raises(EncoderError) as error:
        check_tile_mpp(conch, 0.5, "40x", tile_px=224)
    message = str(error.value)
    assert "takes 448-px tiles" in message and "seen at 0.25 µm/px" in message
    assert "tiling.mpp_40x=0.5 +tiling.tile_px_40x=448" in message
    check_tile_mpp(conch, 0.5, "40x", tile_px=448)
    check_tile_mpp(conch, 0.5, "40x", tile_px=512)            # TITAN's recipe: 512 px at 20x, resized to 448
    check_tile_mpp(get_encoder("uni"), 0.5, "40x", tile_px=256)  # UNI's: 256 px resized to 224


def test_random_vit_s_is_the_same_network_in_every_process_and_runs_under_onnx():
    first, second = load_encoder("random-vit-s"), load_encoder("random-vit-s")
    assert first.identity == second.identity and first.weights_sha256.startswith("random:")
    tiles = _tiles(224, n=3)
    eager = TileEmbedder(first, 224, EmbedderConfig(runtime="torch")).embed(tiles)
    onnx = TileEmbedder(first, 224, EmbedderConfig(runtime="onnx")).embed(tiles)
    assert eager.shape == (3, 384)
    np.testing.assert_allclose(onnx, eager, atol=1e-4, rtol=1e-4)
    # each export in a folder of its own: a network over 2 GB keeps its tensors in files beside the graph
    folders = [p for p in (cache_dir() / "onnx").iterdir() if p.name.startswith(f"random-vit-s-{first.key}-224px")]
    assert len(folders) == 1 and (folders[0] / "model.onnx").is_file()


@pytest.mark.parametrize("name", ["virchow2", "conch-v1.5"])
def test_the_embedding_wrappers_export_to_onnx_with_torch_s_numbers(name, published, shallow):
    encoder = load_encoder(name, weights=published[name][0])
    px = get_encoder(name).input_px
    tiles = _tiles(px)
    eager = TileEmbedder(encoder, px, EmbedderConfig(runtime="torch")).embed(tiles)
    onnx = TileEmbedder(encoder, px, EmbedderConfig(runtime="onnx")).embed(tiles)
    np.testing.assert_allclose(onnx, eager, atol=2e-4, rtol=2e-4)
