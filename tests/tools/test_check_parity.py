"""tools/check_parity.py and its library (clipreid_plugin.interop.parity) on the shared reference cases.

Expectations come from the case files themselves (every output / schedule name they hold) and
from the reference's documented config values (CLIPREID_SPEC.md 1.2-1.4, 2.6, 4.3).
"""

import contextlib
import importlib.util
import io
import math
import os

import pytest
import torch

from parity_harness.case_replay import compare_case, reference_to_cfg

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CASE_FILES = ("case_vit_person.pt", "case_rn_person.pt")


def _load_tool():
    spec = importlib.util.spec_from_file_location("check_parity", os.path.join(REPO, "tools", "check_parity.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(argv):
    """Run the CLI in-process; returns (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = _load_tool().main(argv)
    return status, out.getvalue(), err.getvalue()


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


def table_results(stdout, path):
    """{row name: "PASS"/"FAIL"} of the table printed for ``path``."""
    section = stdout.split(f"== {path}", 1)[1].split("\n== ", 1)[0]
    results = {}
    for line in section.splitlines():
        words = line.split()
        if len(words) >= 4 and ("PASS" in words or "FAIL" in words):
            results[words[0]] = "PASS" if "PASS" in words else "FAIL"
    return results


@pytest.fixture(scope="module")
def shared_run(reference_dir):
    """The tool on both shared cases, run once: (status, stdout, stderr, paths)."""
    paths = [os.path.join(reference_dir, f) for f in CASE_FILES]
    for p in paths:
        if not os.path.isfile(p):
            pytest.skip(f"reference case {p} not found")
    return run_tool(paths) + (paths,)


def test_both_shared_cases_pass_on_every_output(shared_run):
    status, stdout, stderr, paths = shared_run
    assert status == 0, stdout[-4000:] + stderr[-2000:]
    for path in paths:
        case = torch.load(path, weights_only=True)
        results = table_results(stdout, path)
        names = expected_names(case)
        assert len(names) > 150  # stage-2 gradients alone are > 100 rows
        assert set(results) == set(names), set(names) ^ set(results)
        assert set(results.values()) == {"PASS"}
        assert f"{path}: {len(names)}/{len(names)} passed, 0 failed" in stdout
    assert "Summary: 2/2 case(s) passed." in stdout


def test_perturbed_output_fails_its_row_only(reference_dir, tmp_path):
    case = torch.load(os.path.join(reference_dir, "case_vit_person.pt"), weights_only=True)
    case["outputs"]["stage2_i2t_logits"][1, 2] += 1e-3
    path = str(tmp_path / "perturbed.pt")
    torch.save(case, path)
    status, stdout, _ = run_tool([path, "--tiny-clip-dir", reference_dir])
    assert status == 1
    results = table_results(stdout, path)
    assert {n for n, r in results.items() if r == "FAIL"} == {"stage2_i2t_logits"}
    assert len(results) == len(expected_names(case))


def test_unknown_outputs_are_reported_as_not_checked(reference_dir):
    case = torch.load(os.path.join(reference_dir, "case_rn_person.pt"), weights_only=True)
    case["outputs"]["future_output"] = torch.zeros(2)
    case["schedules"]["future_schedule"] = [1.0]
    # Nothing recomputed (empty results): every entry must still get a failing row.
    rows = compare_case(case, {}, {})
    assert [r.name for r in rows] == expected_names(case)
    assert not any(r.passed for r in rows)
    unknown = {r.name: r for r in rows if r.name in ("future_output", "schedules.future_schedule")}
    assert len(unknown) == 2 and all("not checked" in r.note and math.isnan(r.max_abs_err) for r in unknown.values())


def test_missing_and_invalid_files_are_explained(tmp_path):
    status, _, stderr = run_tool([str(tmp_path / "absent.pt")])
    assert status == 2 and "no such case file" in stderr
    bad = tmp_path / "bad.pt"
    torch.save({"meta": {}, "outputs": {}}, bad)
    status, _, stderr = run_tool([str(bad)])
    assert status == 2
    assert "lacks 'state_dict', 'inputs', 'schedules'" in stderr and "meta, state_dict, inputs, outputs" in stderr
    junk = tmp_path / "junk.pt"
    junk.write_text("not a torch file")
    status, _, stderr = run_tool([str(junk)])
    assert status == 2 and "not a readable torch file" in stderr


def test_missing_clip_weights_name_the_folder(reference_dir, tmp_path):
    path = os.path.join(reference_dir, "case_vit_person.pt")
    status, _, stderr = run_tool([path, "--tiny-clip-dir", str(tmp_path)])
    assert status == 2
    assert "tiny_clip_vit_openai_format.pt" in stderr and str(tmp_path) in stderr


# ----------------------------------------------------------------------------- config translation
def _meta(**config):
    return {"config": config, "num_classes": 5, "camera_num": 4, "view_num": 2}


def test_translation_of_the_shipped_vit_clipreid_values():
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
    assert m.META_ARCHITECTURE == "CLIPReID" and m.BACKBONE.CLIP.MODEL_NAME == "ViT-B-16"
    assert m.BACKBONE.CLIP.STRIDE_SIZE == [12, 12] and m.BACKBONE.CLIP.SIE_CAMERA and not m.BACKBONE.CLIP.SIE_VIEW
    assert (m.BACKBONE.CLIP.SIE_COE, m.BACKBONE.CLIP.NUM_CAMERAS, m.BACKBONE.CLIP.NUM_VIEWS) == (1.0, 4, 2)
    assert m.HEADS.NUM_CLASSES == 5 and m.HEADS.NECK_FEAT == "before"
    assert m.LOSSES.NAMES == ("CrossEntropyLoss", "TripletLoss", "ImageTextCrossEntropyLoss")
    assert (m.LOSSES.CE.SCALE, m.LOSSES.CE.EPSILON, m.LOSSES.I2T.EPSILON) == (0.25, 0.1, 0.1)
    assert (m.LOSSES.TRI.MARGIN, m.LOSSES.TRI.SOFT_MARGIN, m.LOSSES.TRI.SCALE) == (0.3, False, 1.0)
    assert m.PROMPT.CLASS_WORD == "person"
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
    cfg = reference_to_cfg(_meta(**{"MODEL.NAME": "RN50", "DATALOADER.SAMPLER": "softmax_triplet",
                                    "DATASETS.NAMES": dataset}))
    assert cfg.MODEL.PROMPT.CLASS_WORD == word and cfg.DATASETS.NAMES == (dataset,)


def test_translation_of_options_and_baselines():
    cfg = reference_to_cfg(_meta(**{
        "MODEL.NAME": "RN50", "DATALOADER.SAMPLER": "softmax_triplet", "MODEL.IF_LABELSMOOTH": "off",
        "MODEL.NO_MARGIN": True, "TEST.NECK_FEAT": "after", "SOLVER.BASE_LR": 3.5e-4, "SOLVER.STEPS": [40, 70]}))
    # flat SOLVER.* = the baselines' train.py
    assert cfg.MODEL.META_ARCHITECTURE == "CLIPBaseline"
    assert cfg.MODEL.LOSSES.NAMES == ("CrossEntropyLoss", "TripletLoss")
    assert cfg.MODEL.LOSSES.CE.EPSILON == 0.0 and cfg.MODEL.LOSSES.TRI.SOFT_MARGIN
    assert cfg.MODEL.HEADS.NECK_FEAT == "after" and cfg.SOLVER.BASE_LR == 3.5e-4
    assert cfg.SOLVER.WARMUP_EPOCHS == 500  # the reference default WARMUP_ITERS, counted in epochs
    with pytest.raises(ValueError, match="MODEL.NAME is 'resnet50'"):
        reference_to_cfg(_meta(**{"DATALOADER.SAMPLER": "softmax_triplet"}))
    with pytest.raises(ValueError, match="softmax_triplet"):
        reference_to_cfg(_meta(**{"MODEL.NAME": "RN50"}))  # default sampler 'softmax' crashes the reference
