"""TEST.FLIP on fast-reid's case a (float32): our flip-averaged feature is the one fast-reid intended.

fast-reid normalises the batch in place inside the model and then flips that tensor, so its
flipped copy is normalised twice; the case records how far that is from the intended average
(``peer_behaviour_checks.flip_test``: max |peer - intended| and ||peer - intended|| / ||intended||).
Rebuilding the peer's (double-normalised) average from our model, its distance to our
``inference_on_dataset(flip_test=True)`` output is exactly the recorded one: ours is the intended value.
"""

import os

import pytest
import torch
import yaml

from clipreid_plugin.evaluation.evaluator import inference_on_dataset
from parity_harness.fastreid_replay import build_peer_model, load_peer_weights_module, model_images

from collect_outputs import CollectOutputs


def test_flip_test_gives_the_intended_average(reference_dir):
    path = os.path.join(reference_dir, "peers", "fastreid_bot_r50.pt")
    if not os.path.isfile(path):
        pytest.skip(f"peer case not found: {path}")
    case = torch.load(path, weights_only=True)
    model, *_ = build_peer_model(case, load_peer_weights_module(path), torch.float32)
    images = model_images(case, torch.float32)  # normalised once, as our loaders give them
    ours = inference_on_dataset(model, [{"images": images.clone()}], CollectOutputs(), flip_test=True)
    cfg = yaml.safe_load(case["meta"]["config_yaml"])["MODEL"]
    mean = torch.tensor(cfg["PIXEL_MEAN"]).view(1, -1, 1, 1)
    std = torch.tensor(cfg["PIXEL_STD"]).view(1, -1, 1, 1)
    model.eval()
    with torch.no_grad():  # the peer: the flipped copy of the normalised batch normalised again
        peer = (model({"images": images}) + model({"images": (torch.flip(images, dims=[3]) - mean) / std})) / 2
    recorded = case["peer_behaviour_checks"]["flip_test"]
    assert (peer - ours).abs().max().item() == pytest.approx(recorded["max_abs_diff_peer_vs_intended"], rel=1e-4)
    assert ((peer - ours).norm() / ours.norm()).item() == pytest.approx(recorded["rel_norm_diff"], rel=1e-4)
