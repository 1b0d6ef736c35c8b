"""The local learning coefficient of your own ``nn.Module`` (run: ``python examples/llc_custom_model.py``;
``--tiny`` for the few-second version CI runs: a smoke test whose budget is too short to converge, so it
says NOT TRUSTWORTHY). Default settings: the chains run until converged (R-hat
<= 1.01, ESS >= 400) or say that they are not."""
import sys

import torch
from torch import nn

from slt_tms.estimators import estimate_llc

tiny = "--tiny" in sys.argv
g = torch.Generator().manual_seed(0)
X = torch.randn(1000, 8, generator=g)
Y = X @ torch.randn(8, 1, generator=g)  # a linear teacher: the model below can fit it exactly
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
for p in model.parameters():
    nn.init.normal_(p, std=0.3, generator=g)
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
for _ in range(100 if tiny else 3000):  # train to (near) a minimum w*
    opt.zero_grad()
    nn.functional.mse_loss(model(X), Y).backward()
    opt.step()
small = dict(num_chains=2, num_draws=100, num_burnin=50) if tiny else {}
res = estimate_llc(model, (X, Y), loss="mse", seed=0, **small)  # n = 1000 rows, full batch: HMC
print(res.summary())  # the first line says "converged" or "NOT TRUSTWORTHY" with the reasons
