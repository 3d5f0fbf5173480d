"""Runs the reference case's steps through CLIPReID and collects (ours, reference) pairs.

Shared by the parity tests and usable as a script that prints the parity table:
``python tests/clipreid/clipreid_parity.py [reference_dir]``.
"""

import os
import sys
from typing import Dict, Tuple

import torch

from clipreid_plugin.config import get_cfg
from clipreid_plugin.interop.reference_checkpoint import convert_reference_state_dict
from clipreid_plugin.modeling.meta_arch.clipreid import CLIPReID

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clipreid_refs import CASES, load_case, max_abs_err  # noqa: E402


def reference_cfg(case: dict):
    """This toolkit's config for the reference case (its ``meta.config`` in our key names)."""
    ref = case["meta"]["config"]
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "CLIPReID"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = "build_clip_backbone"
    cfg.MODEL.BACKBONE.PRETRAIN = True
    cfg.MODEL.BACKBONE.PRETRAIN_PATH = case["tiny_clip_path"]
    cfg.MODEL.BACKBONE.CLIP.MODEL_NAME = ""  # architecture read from the OpenAI-format file
    cfg.MODEL.BACKBONE.CLIP.STRIDE_SIZE = list(ref["MODEL.STRIDE_SIZE"])
    cfg.INPUT.SIZE_TRAIN = list(ref["INPUT.SIZE_TRAIN"])
    cfg.INPUT.SIZE_TEST = list(ref["INPUT.SIZE_TEST"])
    cfg.MODEL.HEADS.NUM_CLASSES = case["meta"]["num_classes"]
    cfg.MODEL.HEADS.NECK_FEAT = ref["TEST.NECK_FEAT"]
    cfg.MODEL.LOSSES.NAMES = ("CrossEntropyLoss", "TripletLoss", "ImageTextCrossEntropyLoss")
    smooth = 0.1 if ref["MODEL.IF_LABELSMOOTH"] == "on" else 0.0
    cfg.MODEL.LOSSES.CE.EPSILON = smooth
    cfg.MODEL.LOSSES.CE.SCALE = ref["MODEL.ID_LOSS_WEIGHT"]
    cfg.MODEL.LOSSES.TRI.MARGIN = ref["SOLVER.MARGIN"]
    cfg.MODEL.LOSSES.TRI.SOFT_MARGIN = ref["MODEL.NO_MARGIN"]
    cfg.MODEL.LOSSES.TRI.SCALE = ref["MODEL.TRIPLET_LOSS_WEIGHT"]
    cfg.MODEL.LOSSES.I2T.EPSILON = smooth
    cfg.MODEL.LOSSES.I2T.SCALE = ref["MODEL.I2T_LOSS_WEIGHT"]
    cfg.MODEL.PROMPT.CLASS_WORD = "person"  # DATASETS.NAMES market1501
    return cfg


def build_reference_model(case: dict) -> CLIPReID:
    """CLIPReID for the case with the reference state dict loaded (through the converter)."""
    model = CLIPReID(reference_cfg(case))
    sd, unmatched = convert_reference_state_dict(case["state_dict"], model)
    assert not unmatched, unmatched
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and set(missing) == {"text_head.text_features", "text_head.text_features_ready"}, missing
    return model


def run_reference_steps(case: dict) -> Tuple[Dict[str, Tuple[torch.Tensor, torch.Tensor]], CLIPReID]:
    """Replay the case: text side, one stage-1 step, then one stage-2 forward/backward.

    Returns:
        ({output name: (ours, reference)}, the model after the steps). Gradient entries are
        named ``stage1_grad_*`` / ``stage2_grads.*`` like the reference's outputs.
    """
    out = case["outputs"]
    inputs = case["inputs"]
    labels = inputs["labels"]
    model = build_reference_model(case)
    pairs: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = {}
    head = model.text_head

    # --- eval-mode pieces and the features stage 1 caches (before any train-mode forward)
    model.eval()
    pairs["get_image_features"] = (model.encode_image_for_stage1(inputs["images"]), out["get_image_features"])
    pairs["tokenized_prompt"] = (head.prompt_learner.tokenized_prompts, out["tokenized_prompt"])
    with torch.no_grad():
        pairs["prompt_embeddings"] = (head.prompt_learner(labels), out["prompt_embeddings"])
        pairs["get_text_features"] = (model.text_features(labels), out["get_text_features"])
    pairs["get_text_features_all_classes"] = (model.compute_all_text_features(batch_size=3),
                                              out["get_text_features_all_classes"])

    # --- one stage-1 step on the cached image features (as the reference: model.train())
    model.train()
    model.set_prompts_trainable(True)
    text = model.text_features(labels)
    losses = model.stage1_losses(out["get_image_features"], labels)
    stage1 = sum(losses.values())
    stage1.backward()
    pairs["stage1_text_features_train_mode"] = (text, out["stage1_text_features_train_mode"])
    pairs["stage1_loss_i2t"] = (losses["loss_supcon_i2t"], out["stage1_loss_i2t"])
    pairs["stage1_loss_t2i"] = (losses["loss_supcon_t2i"], out["stage1_loss_t2i"])
    pairs["stage1_loss"] = (stage1, out["stage1_loss"])
    pairs["stage1_grad_prompt_learner.cls_ctx"] = (head.prompt_learner.cls_ctx.grad.clone(),
                                                   out["stage1_grad_prompt_learner.cls_ctx"])

    # --- stage 2: freeze the text side and the text features, one forward/backward
    model.set_prompts_trainable(False)
    model.zero_grad(set_to_none=True)
    model.set_text_features(model.compute_all_text_features(batch_size=3))
    pairs["stage2_text_features_all_classes"] = (head.text_features.clone(), out["stage2_text_features_all_classes"])
    seen = {}
    i2t_loss = next(m for m in model.losses if type(m).__name__ == "ImageTextCrossEntropyLoss")
    hook = i2t_loss.register_forward_pre_hook(lambda m, args: seen.update(args[0]))
    batch = {"images": inputs["images"], "targets": labels, "camids": inputs["cam_ids"],
             "viewids": inputs["view_ids"]}
    losses = model(batch)
    hook.remove()
    total = sum(losses.values())
    total.backward()
    pairs["stage2_i2t_logits"] = (seen["i2t_logits"], out["stage2_i2t_logits"])
    pairs["stage2_i2t_loss"] = (losses["loss_i2t"], out["stage2_i2t_loss"])
    pairs["stage2_loss"] = (total, out["stage2_loss"])
    ours = dict(model.named_parameters())
    key_map = type(model).REFERENCE_KEY_MAP
    for ref_name, ref_grad in out["stage2_grads"].items():
        target = next(dst + ref_name[len(src):] for src, dst in key_map if ref_name.startswith(src))
        grad = ours[target].grad
        pairs[f"stage2_grads.{ref_name}"] = (grad if grad is not None else torch.zeros_like(ours[target]), ref_grad)
    return pairs, model


def main(argv) -> None:
    ref_dir = argv[1] if len(argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..", "..",
                                                         "shared", "reference")
    for name in CASES:
        pairs, _ = run_reference_steps(load_case(ref_dir, name))
        grads = [max_abs_err(a, b) for k, (a, b) in pairs.items() if k.startswith("stage2_grads.")]
        rel = [max_abs_err(a, b) / max(b.abs().max().item(), 1e-12)
               for k, (a, b) in pairs.items() if k.startswith("stage2_grads.")]
        print(f"## case {name}")
        for k, (a, b) in pairs.items():
            if not k.startswith("stage2_grads."):
                print(f"{k:40s} {max_abs_err(a, b):.2e}  (max|ref| {b.abs().max().item():.3g})")
        print(f"{'stage2_grads.* (' + str(len(grads)) + ' params)':40s} max {max(grads):.2e}, "
              f"max relative to max|ref| {max(rel):.2e}")


if __name__ == "__main__":
    main(sys.argv)
