"""What "the last N blocks" of an encoder means, per architecture family, in one place.

`model.finetune=last:N` trains the last N blocks of an encoder, everything after them (its final norm,
a CNN's head convolution) and the member's head; everything before them (patch or stem embedding,
position embeddings, the earlier blocks) stays as the base weights have it. A *block* is:

- timm Vision Transformers (`VisionTransformer`, and wrappers that hold one, e.g. `trunk`): one entry
  of `blocks` (a transformer block);
- timm EfficientNet / MobileNet: one entry of `blocks`, i.e. one *stage* of inverted-residual blocks
  (EfficientNet-Lite0 has 7, timm's `test_efficientnet` 5);
- timm ConvNeXt, RegNet, ... : one entry of `stages`;
- Hugging Face transformers ViT / DINOv2: one entry of `encoder.layer`.

Anything else has no notion of blocks here, and `last:N` is refused naming the encoder (`all` still
works). "Before" and "after" the blocks follow the order the network registers its parameters in,
which for these families is the order of the forward pass (direct parameters such as a ViT's class
token and position embedding come first).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from wsi_prognosis.errors import ConfigurationError

if TYPE_CHECKING:
    from torch import nn

FINETUNE_FORMS = "none | all | last:N (N >= 1)"
_LAST = re.compile(r"^last:(\d+)$")


@dataclass(frozen=True)
class FinetuneMode:
    """A parsed `model.finetune`: `none` (frozen encoder, heads on cached features), `all`, or `last:N`."""

    mode: str = "none"     # none | all | last
    n: int = 0             # last: how many blocks

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    def __str__(self) -> str:
        return f"last:{self.n}" if self.mode == "last" else self.mode


def parse_finetune(value: object) -> FinetuneMode:
    """`model.finetune` as given on the command line -> `FinetuneMode`; `ConfigurationError` naming the forms."""
    text = str(value).strip().lower() if value is not None else "none"
    if text in ("none", "false", "null", ""):
        return FinetuneMode("none")
    if text == "all":
        return FinetuneMode("all")
    match = _LAST.match(text)
    if match and int(match.group(1)) >= 1:
        return FinetuneMode("last", int(match.group(1)))
    raise ConfigurationError(f"model.finetune={value!r}: not a fine-tuning mode. Fix: one of {FINETUNE_FORMS}, "
                             "e.g. model.finetune=last:2 (the last two blocks, the final norm and the head).")


@dataclass(frozen=True)
class BlockLayout:
    """Where an encoder's blocks are: `container` is the dotted path of the module holding them."""

    encoder: str
    family: str            # vit | cnn: transformers are gradient-checkpointed, CNNs are not
    container: str         # e.g. "blocks", "trunk.blocks", "stages", "encoder.layer"
    n_blocks: int


# (container attribute, the attribute of its parent module or None for any)
_CONTAINERS = (("blocks", None), ("stages", None), ("layer", "encoder"))


def block_layout(model: "nn.Module", encoder: str) -> BlockLayout:
    """The blocks of `model` (the registry's network of `encoder`); `ConfigurationError` naming the encoder when
    it has none. The shallowest matching container wins, so a wrapper around a timm ViT finds the ViT's."""
    from torch import nn

    found: list[tuple[int, str, nn.Module]] = []
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Sequential, nn.ModuleList)) or len(module) == 0:
            continue
        parts = name.split(".")
        for attribute, parent in _CONTAINERS:
            if parts[-1] == attribute and (parent is None or (len(parts) > 1 and parts[-2] == parent)):
                found.append((len(parts), name, module))
    if not found:
        raise ConfigurationError(
            f"encoder={encoder}: its network has no blocks that model.finetune=last:N can count (looked for a timm "
            "ViT's or EfficientNet's `blocks`, a ConvNeXt's `stages`, a transformers ViT's `encoder.layer`). Fix: "
            "model.finetune=all (the whole encoder), or model.finetune=none (heads on its cached features).")
    _, name, container = min(found, key=lambda item: item[0])
    transformer = any(hasattr(block, "attn") or hasattr(block, "attention") for block in container)
    return BlockLayout(encoder=encoder, family="vit" if transformer else "cnn", container=name, n_blocks=len(container))


def trainable_names(model: "nn.Module", finetune: FinetuneMode, layout: BlockLayout | None) -> set[str]:
    """The names of the parameters of `model` that `finetune` trains: all of them (`all`), or those of the last
    N blocks and every parameter registered after the blocks (`last:N`)."""
    names = [name for name, _ in model.named_parameters()]
    if finetune.mode == "all":
        return set(names)
    if finetune.mode != "last" or layout is None:
        return set()
    if finetune.n > layout.n_blocks:
        raise ConfigurationError(
            f"model.finetune=last:{finetune.n}: encoder={layout.encoder} has {layout.n_blocks} blocks "
            f"({layout.container}). Fix: last:1 ... last:{layout.n_blocks}, or model.finetune=all.")
    prefix = layout.container + "."
    first_trained = layout.n_blocks - finetune.n
    trained: set[str] = set()
    seen_blocks = False
    for name in names:
        if name.startswith(prefix):
            seen_blocks = True
            if int(name[len(prefix):].split(".", 1)[0]) >= first_trained:
                trained.add(name)
        elif seen_blocks:  # after the blocks: final norm, head convolution
            trained.add(name)
    return trained


def enable_grad_checkpointing(model: "nn.Module", layout: BlockLayout | None) -> bool:
    """Recompute a transformer's block activations in the backward pass instead of keeping them (timm's
    `set_grad_checkpointing`, transformers' `gradient_checkpointing_enable`): a ViT-L's activations for a bag
    batch do not fit otherwise. CNNs are left alone (their activations are small at tile size). Returns
    whether it was switched on.

    Only non-reentrant checkpoints work here: the tiles never require gradients, and behind a re-entrant
    checkpoint whose input does not require them the blocks get no gradient at all, so timm's switch to
    re-entrant checkpoints (TIMM_REENTRANT_CKPT=1) is refused rather than silently training nothing."""
    if layout is None or layout.family != "vit":
        return False
    owner = model.get_submodule(layout.container.rpartition(".")[0]) if "." in layout.container else model
    if hasattr(owner, "set_grad_checkpointing"):
        try:
            from timm.layers import use_reentrant_ckpt
        except ImportError:  # timm < 1.0.16 has no switch: its checkpoints follow torch's default
            use_reentrant_ckpt = None
        if use_reentrant_ckpt is not None and use_reentrant_ckpt():
            raise ConfigurationError(
                f"encoder={layout.encoder}: TIMM_REENTRANT_CKPT asks timm for re-entrant gradient checkpoints, under "
                "which a fine-tuned encoder gets no gradients. Fix: unset TIMM_REENTRANT_CKPT, or "
                "model.grad_checkpointing=false.")
        owner.set_grad_checkpointing(True)
        return True
    if hasattr(owner, "gradient_checkpointing_enable"):
        owner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return True
    return False


__all__ = ["BlockLayout", "FINETUNE_FORMS", "FinetuneMode", "block_layout", "enable_grad_checkpointing",
           "parse_finetune", "trainable_names"]
