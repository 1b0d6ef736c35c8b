"""Independent reference values for the problems of bench_llc_vs_devinterp.py, with NumPyro's NUTS.

The estimand is the benchmark's: :math:`n\\beta\\,E_w[L_n(w) - L_n(w^*)]` under the localized tempered
posterior :math:`p(w) \\propto \\exp(-n\\beta (L_n(w) - L_n(w^*)) - \\frac\\gamma2 \\lVert w - w^*\\rVert^2)`,
with the empirical losses written again here, in JAX, from their definitions (no slt_tms or devinterp
code), on the very rows and anchors the benchmark uses:

* ``tms``: :math:`L_n = \\frac1n\\sum_k \\lVert x_k - \\mathrm{ReLU}(W^\\top W x_k + b)\\rVert^2`;
* ``rrr``: :math:`L_n = \\frac1{3n}\\sum_k \\lVert y_k - B A x_k\\rVert^2`.

Run in a scratch environment (NumPyro is not a dependency of slt_tms)::

    benchmarks/.venv-bench/bin/python benchmarks/bench_llc_vs_devinterp.py --export /tmp/bench_problems.npz
    /tmp/jax/bin/python benchmarks/reference/numpyro_bench_reference.py /tmp/bench_problems.npz tms,rrr

Prints one JSON line per problem (estimate, MCSE = sd / sqrt(ESS), ESS, R-hat, divergences, seconds).
"""

import json
import math
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402


def losses(P, key):
    X = jnp.asarray(P[key + "_X"], dtype=jnp.float64)
    Y = jnp.asarray(P[key + "_Y"], dtype=jnp.float64)
    if key == "tms":
        c = X.shape[1]

        def L(w):
            W = w[: 2 * c].reshape(2, c)
            b = w[2 * c :]
            return jnp.mean(jnp.sum((X - jax.nn.relu(X @ W.T @ W + b)) ** 2, axis=-1))

        return L
    if key == "rrr":

        def L(w):
            A = w[:6].reshape(2, 3)
            B = w[6:].reshape(3, 2)
            return jnp.mean((Y - X @ A.T @ B.T) ** 2)

        return L
    raise ValueError(key)


def run(P, key, samples=5_000, warmup=1_000, chains=4, seed=0):
    w0 = jnp.asarray(P[key + "_w"], dtype=jnp.float64)
    nbeta, gamma = float(P["nbeta_" + key]), float(P["gamma"])
    L = losses(P, key)
    Lstar = L(w0)

    def U(w):
        return nbeta * (L(w) - Lstar) + 0.5 * gamma * jnp.sum((w - w0) ** 2)

    mcmc = MCMC(NUTS(potential_fn=U, target_accept_prob=0.95), num_warmup=warmup, num_samples=samples,
                num_chains=chains, chain_method="sequential", progress_bar=False)
    init = w0 + 1e-4 * jax.random.normal(jax.random.PRNGKey(seed + 1), (chains, w0.size))
    t = time.time()
    mcmc.run(jax.random.PRNGKey(seed), init_params=init)
    ws = mcmc.get_samples(group_by_chain=True)
    flat = ws.reshape(-1, ws.shape[-1])  # one draw at a time: a vmap over all draws x rows needs ~10 GB
    x = np.asarray(nbeta * (jax.lax.map(L, flat) - Lstar)).reshape(ws.shape[:2])
    ess = float(effective_sample_size(x))
    return {"problem": key, "nbeta": nbeta, "gamma": gamma, "est": float(x.mean()),
            "se": float(x.std() / math.sqrt(ess)), "ess": ess, "rhat": float(split_gelman_rubin(x)),
            "divergences": int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum()),
            "seconds": time.time() - t, "draws": f"{chains} x {samples} after {warmup} warmup"}


if __name__ == "__main__":
    P = np.load(sys.argv[1])
    for key in sys.argv[2].split(","):
        print(json.dumps(run(P, key)), flush=True)
