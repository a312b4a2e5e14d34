"""Per-frame ViT-B/16 (the per-frame baseline of `configs/per_frame_resnet18.py` with a ViT frame
encoder): 4 frames at 224 px, each classified from its class token, probabilities averaged.

Dataset variants: ViT-B/16 (width 768, 12 blocks, 12 heads, patch 16, position table for 224 px)
with DeiT's optimisation (Touvron et al. 2021): AdamW, lr 5e-4 x batch / 512 (3.1e-5 at batch
32), weight decay 0.05, cosine after the warm-up, stochastic depth 0.1, label smoothing 0.1
(DeiT's RandAugment, mixup, CutMix and random erasing are not built in). A ViT trained from
scratch on UCF101 or HMDB51 (10^4 clips) stays far below a CNN; start from ImageNet weights:
`python -m vssl_jax.tools.import_torch --arch per_frame_vit --checkpoint vit_b_16.pth --out DIR`
(torchvision's `ViT_B_16_Weights.IMAGENET1K_V1` file), then `--config.init_from=DIR`.
Demo variants: a ViT of width 64, 4 blocks, 4 heads, 8 px patches on the demo's 64 px frames.

Supervised; variants `demo` (default), `smoke`, `ucf101`, `hmdb51`, `kinetics`: see
`configs/supervised.py`.
"""

from __future__ import annotations

import ml_collections

from configs.supervised import DATASETS, VARIANTS, supervised_config

__all__ = ["VARIANTS", "get_config", "vit_config"]  # VARIANTS: every `arg` get_config takes.

VIT_B_16 = {
    "width": 768,
    "depth": 12,
    "num_heads": 12,
    "patch": 16,
    "image_size": 224,
    "drop_path": 0.1,
}
DEMO_VIT = {"width": 64, "depth": 4, "num_heads": 4, "patch": 8, "image_size": 64}


def vit_config(
    model_name: str,
    arg: str | None,
    *,
    num_frames: int,
    frame_stride: int,
    sampler: str = "dense",
    model: dict | None = None,
    demo_model: dict | None = None,
) -> ml_collections.ConfigDict:
    """`supervised_config` for a model with a ViT frame encoder: ViT-B/16 at 224 px and DeiT's
    optimisation on the datasets (this module's docstring), the demo ViT on the demo's frames;
    `model` / `demo_model` add the model's other options."""
    config = supervised_config(
        model_name,
        arg,
        num_frames=num_frames,
        frame_stride=frame_stride,
        crop_size=224,
        sampler=sampler,
        model={**VIT_B_16, **(model or {})},
        demo_model={**DEMO_VIT, **(demo_model or {})},
    )
    if (arg or "demo") in DATASETS:
        with config.unlocked():
            config.optimizer.name = "adamw"
            config.optimizer.lr = 5e-4 * config.batch_size / 512
            config.optimizer.weight_decay = 0.05
            config.objective.label_smoothing = 0.1
    return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return vit_config("per_frame_vit", arg, num_frames=4, frame_stride=8)
