"""Export the anchors and targets of the ground-truth problems for numpyro_llc_reference.py."""

import json
import os

import numpy as np

from slt_tms.theory import critical_points as cpm
from slt_tms.theory import ground_truth as gt

probs = {
    "rrr_3_3_2_1": gt.reduced_rank_regression(3, 3, 2, 1, 10_000, 0),
    "rrr_2_5_2_1": gt.reduced_rank_regression(2, 5, 2, 1, 10_000, 0),
    "rrr_5_2_2_1": gt.reduced_rank_regression(5, 2, 2, 1, 10_000, 0),
    "rrr_2_2_5_1": gt.reduced_rank_regression(2, 2, 5, 1, 10_000, 0),
    "rrr_3_3_2_0": gt.reduced_rank_regression(3, 3, 2, 0, 10_000, 0),
    "dln_3223_1": gt.deep_linear_network((3, 2, 2, 3), 1, 10_000, 0),
    "dln_32223_1": gt.deep_linear_network((3, 2, 2, 2, 3), 1, 10_000, 0),
}
arrs = {}
meta = {}
for k, p in probs.items():
    pot = p.potential
    arrs[k + "_w"] = p.w_star.numpy()
    arrs[k + "_target"] = pot.target.numpy()
    meta[k] = {"shapes": pot.shapes, "lambda": p.lambda_true, "m": p.multiplicity, "d": p.d}
for c, names in [(5, ["5"]), (6, ["6", "5", "5+"]), (7, ["7"]), (8, ["8"])]:
    pts = {q.name: q for q in cpm.critical_points(c)}
    for nm in names:
        q = pts[nm]
        key = f"tms_c{c}_{nm.replace('+', 'p')}"
        arrs[key + "_w"] = q.flat().numpy()
        meta[key] = {"c": c, "lambda": q.lambda_theory, "loss": q.loss, "d": q.d}
# the hexagon in 20 features: 14 dead columns whose flat region borders the lower wells of the 6^{sigma+}
q = cpm.kgon(6, 20, 0, 0)
arrs["tms_c20_6_w"] = q.flat().numpy()
meta["tms_c20_6"] = {"c": 20, "lambda": q.lambda_theory, "loss": q.loss, "d": q.d}
out_dir = os.environ.get("LLC_REFERENCE_DIR", "/tmp/llc_reference")
os.makedirs(out_dir, exist_ok=True)
np.savez(os.path.join(out_dir, "problems.npz"), **arrs)
with open(os.path.join(out_dir, "problems.json"), "w") as fh:
    json.dump(meta, fh, indent=1)
print(f"wrote {len(meta)} problems to {out_dir}")
