"""CLIPBaseline against the reference implementation's tensors (case_vit_person.pt, case_rn_person.pt).

The cases come from the reference CLIP-ReID model; its image side (encoder, BNNecks,
classifiers, ID and triplet losses) is exactly the baseline. The stage-2 loss also holds the
image-to-text term, so for the gradient check it is added here from the reference's fixed text
features (``stage2_text_features_all_classes``) with the reference's formula (spec 3.3).

Exact parity, in float64: the model and inputs ``.double()``, against the cases the reference
computed in float64, each output within the parity harness's bound (``case_replay.tensor_bound``,
``1e-9 max(1, max|ref|)``). The same outputs in float32, bounded by the reference's own float32
error, are checked in test_clipreid_parity.py (the same image side, inside CLIPReID).
"""

import pytest
import torch
import torch.nn.functional as F

from parity_harness.case_replay import tensor_bound

from reference_cases import CASES, DTYPES
from reference_layout import our_name
from tiny_clip import max_err

PRECISION = "float64"


def _batch(case, dtype):
    i = case["inputs"]
    return {"images": i["images"].to(DTYPES[dtype]), "targets": i["labels"], "camids": i["cam_ids"],
            "viewids": i["view_ids"], "img_paths": [""] * len(i["labels"])}


def _smoothed_ce(logits, y, eps=0.1):
    """Spec 3.1 written out: q = (1 - eps) onehot + eps / C, loss = mean_b sum_k -q log softmax."""
    q = (1 - eps) * F.one_hot(y, logits.shape[1]).to(logits.dtype) + eps / logits.shape[1]
    return (-q * logits.log_softmax(1)).sum(1).mean()


class Within:
    """Compares with one case's outputs under the harness's bound of a precision; collects every
    miss, so that a failure lists all of them."""

    def __init__(self, case, tolerance):
        self.out, self.tolerance, self.misses = case["outputs"], tolerance, []

    def ref(self, name):
        """The reference tensor of a flattened output name (``a.b`` = out["a"]["b"])."""
        value = self.out
        for part in name.split(".", 1) if name.startswith(("stage2_grads.", "train_bn_buffers")) else [name]:
            value = value[part]
        return value

    def check(self, name, ours, ref=None, factor=1.0):
        """max|ours - ref| <= factor x the bound of output ``name`` (factor: a sum of that many terms)."""
        ref = self.ref(name) if ref is None else ref
        assert ours.dtype == ref.dtype, (name, ours.dtype, ref.dtype)  # no cast on the way
        bound, text = tensor_bound(name, ref, self.tolerance)
        err = max_err(ours, ref)
        if not err <= factor * bound:
            self.misses.append(f"{name}: {err:.3g} > {factor:g} x {text}")

    def assert_none(self):
        assert not self.misses, "\n".join(self.misses)


@pytest.mark.parametrize("name", CASES)
def test_checkpoint_keys_all_mapped(reference_case, case_model, name):
    """Everything but the CLIP-ReID text side of the reference checkpoint has a place in the
    baseline (and every baseline tensor is in the checkpoint); widths are the case's."""
    model, unmatched = case_model(name)
    assert unmatched and all(k.startswith(("prompt_learner.", "text_encoder.")) for k in unmatched)
    meta = reference_case(name)["meta"]
    assert (model.backbone.out_features, model.backbone.proj_features) == (meta["in_planes"], meta["in_planes_proj"])


@pytest.mark.parametrize("name", CASES)
def test_eval_embeddings(reference_case, case_tolerance, case_model, name):
    """Eval-mode embeddings with TEST.NECK_FEAT before and after (in_planes + proj wide)."""
    dtype = PRECISION
    case = reference_case(name, dtype)
    model, _ = case_model(name, dtype)
    model.eval()
    within = Within(case, case_tolerance(name, dtype))
    with torch.no_grad():
        model.neck_feat = "before"
        within.check("eval_feat_neck_before", model(_batch(case, dtype)))
        model.neck_feat = "after"
        within.check("eval_feat_neck_after", model(_batch(case, dtype)))
    within.assert_none()


@pytest.mark.parametrize("name", CASES)
def test_train_step_outputs_losses_buffers_and_grads(reference_case, case_tolerance, case_model, name):
    """One stage-2 training step of the image side: features and class scores, BN statistics after
    the forward, the ID / triplet / image-to-text loss terms and total, and the gradient of every
    image-side tensor the case holds."""
    dtype = PRECISION
    case = reference_case(name, dtype)
    model, _ = case_model(name, dtype)
    model.train()
    out, batch = case["outputs"], _batch(case, dtype)
    y = batch["targets"]
    within = Within(case, case_tolerance(name, dtype))

    feats = model.extract_features(batch["images"])
    for ours, ref in [("feat_last", "train_img_feature_last"), ("feat", "train_img_feature"),
                      ("feat_proj", "train_img_feature_proj")]:
        within.check(ref, feats[ours])
    within.check("train_cls_score", feats["cls_outputs"][0])
    within.check("train_cls_score_proj", feats["cls_outputs"][1])

    # BNNeck (and, for RN, encoder BN) running statistics after the one train-mode forward
    state = model.state_dict()
    for ref_key in out["train_bn_buffers_after_forward"]:
        within.check(f"train_bn_buffers_after_forward.{ref_key}", state[our_name(ref_key)])

    # loss terms: the registered losses, weighted by the case's ID / triplet weights
    id_w = case["meta"]["config"]["MODEL.ID_LOSS_WEIGHT"]
    losses = model.compute_losses(feats, y)
    assert set(losses) == {"loss_cls", "loss_triplet"}
    id_terms, tri_terms = out["stage2_id_loss_terms"], out["stage2_triplet_loss_terms"]
    within.check("stage2_id_loss_terms", losses["loss_cls"], id_w * id_terms.sum(), factor=len(id_terms))
    within.check("stage2_triplet_loss_terms", losses["loss_triplet"], tri_terms.sum(), factor=len(tri_terms))
    within.check("stage2_id_loss_terms", torch.stack([_smoothed_ce(z, y) for z in feats["cls_outputs"]]))

    # i2t term (CLIP-ReID's part of stage2_loss) from the reference's fixed text features
    logits = feats["feat_proj"] @ out["stage2_text_features_all_classes"].t()
    within.check("stage2_i2t_logits", logits)
    total = losses["loss_cls"] + losses["loss_triplet"] + _smoothed_ce(logits, y)
    within.check("stage2_loss", total)
    total.backward()

    params = dict(model.named_parameters())
    checked = 0
    for ref_key in out["stage2_grads"]:
        if ref_key.startswith(("prompt_learner.", "text_encoder.")):
            continue
        grad = params[our_name(ref_key)].grad
        assert grad is not None, ref_key
        within.check(f"stage2_grads.{ref_key}", grad)
        checked += 1
    # the file keeps the gradients of most image-side tensors (not every large weight matrix)
    assert checked >= 100
    within.assert_none()
