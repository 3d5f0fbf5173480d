"""Names of the shared reference cases and of the two precisions they come in."""

import torch

CASES = ("vit", "rn")  # case_vit_person.pt, case_rn_person.pt
DTYPES = {"float32": torch.float32, "float64": torch.float64}  # float64 = the float64/ folder
