"""tools/check_parity.py and its library (tools/parity_harness/case_replay.py).

On the shared reference cases (skipped without ../shared): every row passes in float32 (bounded
by the reference's own float32 error) and in float64 (the exact-parity bound), and a perturbed
output fails its row only. The rest runs anywhere: reports of unknown outputs, unusable files,
and the translation of the reference's config values (CLIPREID_SPEC.md 1.2-1.4, 2.6, 4.3).
"""

import math
import os

import pytest
import torch

from parity_harness.case_replay import compare_case, reference_to_cfg
from parity_runs import run_check_parity, shared_case_paths


def expected_names(case):
    """Every output (nested dicts as a.b, tuples as a.0) and schedule entry of a case file."""
    names = []

    def walk(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
        elif isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
            for j, v in enumerate(value):
                walk(f"{prefix}{j}.", v)
        else:
            names.append(prefix[:-1])

    walk("", case["outputs"])
    return names + [f"schedules.{k}" for k in case["schedules"]]


def table_rows(stdout, path):
    """{row name: (result "PASS"/"FAIL", the row's line)} of the table printed for ``path``."""
    section = stdout.split(f"== {path}", 1)[1].split("\n== ", 1)[0]
    rows = {}
    for line in section.splitlines():
        words = line.split()
        if len(words) >= 4 and ("PASS" in words or "FAIL" in words):
            rows[words[0]] = ("PASS" if "PASS" in words else "FAIL", line)
    return rows


def _assert_every_row_passes(run):
    """Exit 0, and one PASS row per output and schedule entry of each case file."""
    assert run.status == 0, run.stdout[-4000:] + run.stderr[-2000:]
    for path in run.paths:
        case = torch.load(path, weights_only=True)
        rows = table_rows(run.stdout, path)
        names = expected_names(case)
        assert len(names) > 150  # stage-2 gradients alone are > 100 rows
        assert set(rows) == set(names), set(names) ^ set(rows)
        assert {result for result, _ in rows.values()} == {"PASS"}
        assert f"{path}: {len(names)}/{len(names)} passed, 0 failed" in run.stdout
    assert "Summary: 2/2 case(s) passed." in run.stdout
    return rows


def test_both_shared_cases_pass_on_every_output(shared_parity_run):
    """float32 (the default): every row of both cases passes; each case has its float64 twin
    beside it, so the float32 bounds come from the reference's own float32 error."""
    run = shared_parity_run("float32")
    _assert_every_row_passes(run)
    for path in run.paths:
        assert "replayed in float32; float32 bounds from the reference's own rounding" in run.stdout
        assert os.path.join(os.path.dirname(path), "float64", os.path.basename(path)) in run.stdout


def test_both_float64_cases_pass_on_every_output(shared_parity_run):
    """``--dtype float64`` on the float64 cases: exit 0, every row passes, and every tensor row is
    held to the exact-parity bound 1e-9 x max(1, max|ref|)."""
    run = shared_parity_run("float64")
    _assert_every_row_passes(run)
    assert run.stdout.count("replayed in float64") == 2
    for path in run.paths:
        lines = [line for _, line in table_rows(run.stdout, path).values()]
        # floating-point tensors: the float64 bound; integers and names: exact; LRs: 1e-12 relative
        assert sum("(1e-9 max(1,|ref|))" in line for line in lines) > 150
        assert not any("1e-5" in line or "ref32-ref64" in line for line in lines)


def test_perturbed_output_fails_its_row_only(reference_dir, tmp_path):
    """One float64 output moved by 1e-3 fails its row (and only it) in the float64 replay (the RN
    case: the cheaper replay)."""
    path64 = shared_case_paths(reference_dir, "float64")[1]
    case = torch.load(path64, weights_only=True)
    case["outputs"]["stage2_i2t_logits"][1, 2] += 1e-3
    path = str(tmp_path / "perturbed.pt")
    torch.save(case, path)
    status, stdout, _ = run_check_parity(["--dtype", "float64", path, "--tiny-clip-dir", reference_dir])
    assert status == 1
    rows = table_rows(stdout, path)
    assert {n for n, (result, _) in rows.items() if result == "FAIL"} == {"stage2_i2t_logits"}
    assert len(rows) == len(expected_names(case))


def _minimal_case():
    """The smallest case file the format allows (README of ../shared/reference): no real model."""
    return {"meta": {"config": {"MODEL.NAME": "ViT-B-16", "DATALOADER.SAMPLER": "softmax_triplet"},
                     "num_classes": 2, "camera_num": 1, "view_num": 1,
                     "tiny_clip_file": "tiny_clip_vit_openai_format.pt"},
            "state_dict": {}, "inputs": {"images": torch.zeros(1, 3, 8, 4), "labels": torch.zeros(1, dtype=torch.long),
                                         "cam_ids": torch.zeros(1, dtype=torch.long),
                                         "view_ids": torch.zeros(1, dtype=torch.long)},
            "outputs": {"eval_feat_neck_before": torch.zeros(1, 3),
                        "eval_image_encoder_outputs": (torch.zeros(1, 2), torch.zeros(1, 2)),
                        "stage2_grads": {"classifier.weight": torch.zeros(2, 3)}},
            "schedules": {"stage1_lr_per_epoch": [1e-5, 2e-5]}}


def test_unknown_outputs_are_reported_as_not_checked():
    """Nothing recomputed (empty results): every entry, nested ones flattened, still gets a
    failing row; entries the harness does not know are marked "not checked"."""
    case = _minimal_case()
    case["outputs"]["future_output"] = torch.zeros(2)
    case["schedules"]["future_schedule"] = [1.0]
    rows = compare_case(case, {}, {})
    assert [r.name for r in rows] == ["eval_feat_neck_before", "eval_image_encoder_outputs.0",
                                      "eval_image_encoder_outputs.1", "stage2_grads.classifier.weight",
                                      "future_output", "schedules.stage1_lr_per_epoch",
                                      "schedules.future_schedule"] == expected_names(case)
    assert not any(r.passed for r in rows)
    unknown = {r.name: r for r in rows if r.name in ("future_output", "schedules.future_schedule")}
    assert len(unknown) == 2 and all("not checked" in r.note and math.isnan(r.max_abs_err) for r in unknown.values())


def test_missing_and_invalid_files_are_explained(tmp_path):
    """Exit 2 with the reason: no file, keys of the format missing (listed), not a torch file."""
    status, _, stderr = run_check_parity([str(tmp_path / "absent.pt")])
    assert status == 2 and "no such case file" in stderr
    bad = tmp_path / "bad.pt"
    torch.save({"meta": {}, "outputs": {}}, bad)
    status, _, stderr = run_check_parity([str(bad)])
    assert status == 2
    assert "lacks 'state_dict', 'inputs', 'schedules'" in stderr and "meta, state_dict, inputs, outputs" in stderr
    junk = tmp_path / "junk.pt"
    junk.write_text("not a torch file")
    status, _, stderr = run_check_parity([str(junk)])
    assert status == 2 and "not a readable torch file" in stderr


def test_missing_clip_weights_name_the_folder(tmp_path):
    """A case whose meta.tiny_clip_file is in none of the folders searched: exit 2, naming the
    file and the folder given."""
    path = tmp_path / "case.pt"
    torch.save(_minimal_case(), path)
    empty = tmp_path / "weights"
    empty.mkdir()
    status, _, stderr = run_check_parity([str(path), "--tiny-clip-dir", str(empty)])
    assert status == 2
    assert "tiny_clip_vit_openai_format.pt" in stderr and str(empty) in stderr


# ----------------------------------------------------------------------------- config translation
def _meta(**config):
    return {"config": config, "num_classes": 5, "camera_num": 4, "view_num": 2}


def test_translation_of_the_shipped_vit_clipreid_values():
    """The person ViT CLIP-ReID config's reference values become this toolkit's keys; keys left out take the reference defaults."""
    # configs/person/vit_clipreid.yml (CLIPREID_SPEC.md 1.4), keys as the cases store them.
    cfg = reference_to_cfg(_meta(**{
        "MODEL.NAME": "ViT-B-16", "MODEL.STRIDE_SIZE": [12, 12], "MODEL.SIE_CAMERA": True, "MODEL.SIE_COE": 1.0,
        "MODEL.ID_LOSS_WEIGHT": 0.25, "MODEL.IF_LABELSMOOTH": "on", "DATALOADER.SAMPLER": "softmax_triplet",
        "INPUT.SIZE_TRAIN": [256, 128], "INPUT.PIXEL_MEAN": [0.5, 0.5, 0.5], "TEST.NECK_FEAT": "before",
        "DATASETS.NAMES": "market1501", "SOLVER.STAGE1.MAX_EPOCHS": 120, "SOLVER.STAGE1.BASE_LR": 0.00035,
        "SOLVER.STAGE1.WARMUP_LR_INIT": 1e-05, "SOLVER.STAGE1.LR_MIN": 1e-06, "SOLVER.STAGE1.WEIGHT_DECAY": 1e-4,
        "SOLVER.STAGE2.BASE_LR": 5e-06, "SOLVER.STAGE2.BIAS_LR_FACTOR": 2, "SOLVER.STAGE2.WEIGHT_DECAY": 1e-4,
        "SOLVER.STAGE2.WEIGHT_DECAY_BIAS": 1e-4, "SOLVER.STAGE2.MAX_EPOCHS": 60, "SOLVER.STAGE2.STEPS": [30, 50],
        "SOLVER.STAGE2.WARMUP_FACTOR": 0.1, "SOLVER.STAGE2.WARMUP_ITERS": 10}))
    m = cfg.MODEL
    assert m.META_ARCHITECTURE == "CLIPReID" and cfg.CLIPREID.BACKBONE.MODEL_NAME == "ViT-B-16"
    assert cfg.CLIPREID.BACKBONE.STRIDE_SIZE == [12, 12] and cfg.CLIPREID.BACKBONE.SIE_CAMERA and not cfg.CLIPREID.BACKBONE.SIE_VIEW
    assert (cfg.CLIPREID.BACKBONE.SIE_COE, cfg.CLIPREID.BACKBONE.NUM_CAMERAS, cfg.CLIPREID.BACKBONE.NUM_VIEWS) == (1.0, 4, 2)
    assert m.HEADS.NUM_CLASSES == 5 and cfg.CLIPREID.NECK_FEAT == "before"
    assert m.LOSSES.NAMES == ("CrossEntropyLoss", "TripletLoss", "ImageTextCrossEntropyLoss")
    assert (m.LOSSES.CE.SCALE, m.LOSSES.CE.EPSILON, cfg.CLIPREID.LOSSES.I2T.EPSILON) == (0.25, 0.1, 0.1)
    assert (m.LOSSES.TRI.MARGIN, m.LOSSES.TRI.SOFT_MARGIN, m.LOSSES.TRI.SCALE) == (0.3, False, 1.0)
    assert cfg.CLIPREID.PROMPT.CLASS_WORD == "person"
    s = cfg.SOLVER
    assert (s.BASE_LR, s.BIAS_LR_FACTOR, s.WEIGHT_DECAY, s.WEIGHT_DECAY_BIAS) == (5e-6, 2.0, 1e-4, 1e-4)
    assert (s.MAX_EPOCHS, tuple(s.STEPS_EPOCHS), s.GAMMA) == (60, (30, 50), 0.1)
    assert (s.WARMUP_FACTOR, s.WARMUP_EPOCHS, s.WARMUP_METHOD) == (0.1, 10, "linear")
    assert (s.SCHED.NAME, s.SCHED.UNIT, s.OPTIMIZER_NAME, s.IMS_PER_BATCH) == ("WarmupMultiStepLR", "epoch", "Adam", 64)
    s1 = cfg.CLIPREID.STAGE1
    assert (s1.MAX_EPOCHS, s1.BASE_LR, s1.WARMUP_EPOCHS, s1.WARMUP_LR_INIT, s1.LR_MIN, s1.WEIGHT_DECAY) == \
        (120, 3.5e-4, 5, 1e-5, 1e-6, 1e-4)
    assert cfg.INPUT.SIZE_TRAIN == [256, 128] and cfg.INPUT.PIXEL_MEAN == [0.5, 0.5, 0.5]
    assert cfg.INPUT.SIZE_TEST == [384, 128]  # left out -> the reference default
    assert cfg.DATALOADER.SAMPLER == "PKSampler" and cfg.TEST.FEAT_NORM


@pytest.mark.parametrize("dataset, word", [("VehicleID", "vehicle"), ("veri", "vehicle"), ("VeRi", "person"),
                                           ("msmt17", "person")])
def test_class_word_follows_the_reference_exact_compare(dataset, word):
    """Only the exact strings "VehicleID" and "veri" give the vehicle prompt, as the reference compares."""
    cfg = reference_to_cfg(_meta(**{"MODEL.NAME": "RN50", "DATALOADER.SAMPLER": "softmax_triplet",
                                    "DATASETS.NAMES": dataset}))
    assert cfg.CLIPREID.PROMPT.CLASS_WORD == word and cfg.DATASETS.NAMES == (dataset,)


def test_translation_of_options_and_baselines():
    """Flat SOLVER.* keys mean a baseline; options translate; configs the reference cannot run are refused."""
    cfg = reference_to_cfg(_meta(**{
        "MODEL.NAME": "RN50", "DATALOADER.SAMPLER": "softmax_triplet", "MODEL.IF_LABELSMOOTH": "off",
        "MODEL.NO_MARGIN": True, "TEST.NECK_FEAT": "after", "SOLVER.BASE_LR": 3.5e-4, "SOLVER.STEPS": [40, 70]}))
    # flat SOLVER.* = the baselines' train.py
    assert cfg.MODEL.META_ARCHITECTURE == "CLIPBaseline"
    assert cfg.MODEL.LOSSES.NAMES == ("CrossEntropyLoss", "TripletLoss")
    assert cfg.MODEL.LOSSES.CE.EPSILON == 0.0 and cfg.MODEL.LOSSES.TRI.SOFT_MARGIN
    assert cfg.CLIPREID.NECK_FEAT == "after" and cfg.SOLVER.BASE_LR == 3.5e-4
    assert cfg.SOLVER.WARMUP_EPOCHS == 500  # the reference default WARMUP_ITERS, counted in epochs
    with pytest.raises(ValueError, match="MODEL.NAME is 'resnet50'"):
        reference_to_cfg(_meta(**{"DATALOADER.SAMPLER": "softmax_triplet"}))
    with pytest.raises(ValueError, match="softmax_triplet"):
        reference_to_cfg(_meta(**{"MODEL.NAME": "RN50"}))  # default sampler 'softmax' crashes the reference
