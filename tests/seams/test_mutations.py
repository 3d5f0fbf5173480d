"""The training tests fail when training breaks.

Each mutation of tests/mutations/sitecustomize.py (a no-op optimizer step, a frozen backbone,
every loss weighted 0) is applied to a child pytest run of training tests, and every one of them
must fail with training_checks' "TRAINING DID NOT HAPPEN" message, not pass and not crash some
other way. The suite runs one representative test per mutation (about 10 s of CPU each);
``CLIPREID_MUTATION_CHECK=full`` runs every named training test under every mutation (minutes):

    CLIPREID_MUTATION_CHECK=full python -m pytest -q tests/seams/test_mutations.py
"""

import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from training_checks import NOT_TRAINED

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MUTATIONS_DIR = os.path.join(REPO, "tests", "mutations")
MATRIX = "tests/seams/test_mixing_matrix.py::test_meta_architecture_trains_and_evaluates_with_backbone"

# one cheap test per mutation, across the meta-architectures and kinds of backbone
SUBSET = {
    "noop_step": [f"{MATRIX}[CLIPReID-torchvision_vit]"],
    "frozen_backbone": [f"{MATRIX}[Baseline-torchvision_vit]"],
    "zero_loss_weight": [f"{MATRIX}[CLIPBaseline-clip_vit]"],
}
# the training tests named by issue 19: the mixing matrix, the out-of-tree plugin, the trainers' e2e runs
FULL = [
    MATRIX,
    "tests/seams/test_out_of_tree_plugin.py::test_plugin_outside_the_package_trains_and_evaluates",
    "tests/projects/test_clipreid_train_e2e.py::test_veri_vit_runs_both_phases_and_evaluates",
    "tests/projects/test_clipreid_train_e2e.py::test_person_cnn_clipreid_runs_both_phases",
    "tests/projects/test_clipreid_train_e2e.py::test_resume_inside_stage1_reaches_the_same_prompts",
    "tests/projects/test_clipreid_train_e2e.py::test_clip_baseline_configs_train_on_synthetic",
    "tests/tools/test_train_net_cli.py::test_train_writes_config_checkpoints_metrics_and_results",
]


def run_mutated(mutation, node_ids, junit_path):
    """pytest on ``node_ids`` with ``mutation`` applied in every process; returns {test id: failure
    message or None when it passed}."""
    env = dict(os.environ, CLIPREID_TEST_MUTATION=mutation, PYTHONWARNINGS="ignore",
               PYTHONPATH=os.pathsep.join([MUTATIONS_DIR, REPO, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                           f"--junitxml={junit_path}", *node_ids], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=3600)
    assert os.path.isfile(junit_path), proc.stdout[-3000:] + proc.stderr[-3000:]
    outcomes = {}
    for case in ET.parse(junit_path).getroot().iter("testcase"):
        if case.find("skipped") is not None:
            continue
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        outcomes[f"{case.get('classname')}::{case.get('name')}"] = (
            None if bad is None else (bad.get("message") or "") + (bad.text or ""))
    assert outcomes, proc.stdout[-3000:] + proc.stderr[-3000:]
    return outcomes


@pytest.mark.parametrize("mutation", list(SUBSET))
def test_training_tests_fail_under_mutation(mutation, tmp_path):
    full = os.environ.get("CLIPREID_MUTATION_CHECK") == "full"
    outcomes = run_mutated(mutation, FULL if full else SUBSET[mutation], str(tmp_path / "junit.xml"))
    report = "\n".join(f"{name}: {'PASSED' if msg is None else msg.splitlines()[0][:200]}"
                       for name, msg in sorted(outcomes.items()))
    if full:
        print(f"\n{mutation}:\n{report}")
    passed = [name for name, msg in outcomes.items() if msg is None]
    assert not passed, f"training tests pass under the mutation {mutation}:\n{report}"
    other = [name for name, msg in outcomes.items() if NOT_TRAINED not in msg]
    assert not other, f"training tests failed for another reason than '{NOT_TRAINED}' under {mutation}:\n{report}"
