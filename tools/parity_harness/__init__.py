"""Development tooling for parity with the reference CLIP-ReID implementation.

Not part of the installed package (the product never imports it): ``tools/check_parity.py``,
the parity tests and ``benchmarks/eval_scale.py`` use it.

* :mod:`.case_replay`: rebuild a reference case's model with this toolkit, replay every step,
  compare every output and schedule (float32 or float64);
* :mod:`.reference_eval`: a transcription of the reference's dense evaluation (distance
  matrix, CMC/mAP, re-ranking), the oracle of the evaluation tests and the baseline of the
  evaluation benchmark.
"""
