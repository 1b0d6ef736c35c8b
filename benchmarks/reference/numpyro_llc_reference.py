"""Independent reference values of the LLC estimand, with NumPyro's NUTS (not slt_tms's samplers).

Target: the localized tempered posterior p(w) ~ exp(-nbeta (L(w) - L*) - (gamma/2)|w - w*|^2) with the
losses written here again, in JAX, from their definitions (products of matrices for reduced-rank regression
and deep linear networks
the TMS population loss by exact 2-point Gauss-Legendre quadrature of each
quadratic piece of the defining integral, split at the ReLU kink). Prints nbeta * (E[L] - L*), its MCSE
(sd / sqrt(ESS)), ESS, R-hat and divergences as JSON lines.

Run in a scratch environment (NumPyro is not a dependency of slt_tms):

    python -m venv /tmp/jax && /tmp/jax/bin/pip install jax numpyro
    .venv/bin/python benchmarks/reference/export_problems.py            # anchors -> /tmp/llc_reference/
    /tmp/jax/bin/python benchmarks/reference/numpyro_llc_reference.py rrr_3_3_2_1,tms_c6_6 1085.736,8685.890

The test suite's golden numbers (tests/estimators/test_llc.py) were produced this way (4 chains x 20 000
draws after 3 000 warmup, target acceptance 0.95). A third argument ``identity`` keeps NUTS's mass matrix
at the identity (no adaptation): at the hexagon in 20 features (``tms_c20_6``) a diagonal mass adapted in
the dead columns' flat region makes the narrow wells at a dead bias just above 0 unstable (divergences);
the identity does not.
"""

import json
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402

DIR = os.environ.get("LLC_REFERENCE_DIR", "/tmp/llc_reference")
P = np.load(os.path.join(DIR, "problems.npz"))
META = json.load(open(os.path.join(DIR, "problems.json")))


def product_loss(shapes, target):
    target = jnp.asarray(target)

    def L(w):
        off = 0
        prod = None
        for o, i in shapes:
            W = w[off : off + o * i].reshape(o, i)
            off += o * i
            prod = W if prod is None else W @ prod
        return jnp.sum((prod - target) ** 2)

    return L


# Gauss-Legendre 2-point nodes on [0,1]: exact for quadratics
GL_X = jnp.array([0.5 - 0.5 / math.sqrt(3), 0.5 + 0.5 / math.sqrt(3)])
GL_W = jnp.array([0.5, 0.5])


def seg_integral(f, lo, hi):
    x = lo + (hi - lo) * GL_X[:, None, None]
    return (hi - lo) * jnp.sum(GL_W[:, None, None] * f(x), axis=0)


def tms_loss(c, r=2):
    def L(w):
        W = w[: r * c].reshape(r, c)
        b = w[r * c :]
        a = W.T @ W  # a[i, j] = W_i . W_j; input j, output i
        B = b[:, None] * jnp.ones((c, c))
        delta = jnp.eye(c)

        def f(mu):
            return (delta * mu - jnp.maximum(mu * a + B, 0.0)) ** 2

        safe_a = jnp.where(jnp.abs(a) > 1e-300, a, 1.0)
        mu0 = jnp.where(jnp.abs(a) > 1e-300, jnp.clip(-B / safe_a, 0.0, 1.0), 0.0)
        tot = seg_integral(f, jnp.zeros_like(a), mu0) + seg_integral(f, mu0, jnp.ones_like(a))
        return jnp.sum(tot) / c

    return L


def run(key, nbeta, gamma=1.0, num_samples=20000, num_warmup=3000, chains=4, seed=0, accept=0.95, mass=True):
    w0 = jnp.asarray(P[key + "_w"])
    m = META[key]
    L = product_loss(m["shapes"], P[key + "_target"]) if "shapes" in m else tms_loss(m["c"])
    Lstar = L(w0)

    def U(w):
        return nbeta * (L(w) - Lstar) + 0.5 * gamma * jnp.sum((w - w0) ** 2)

    kernel = NUTS(potential_fn=U, target_accept_prob=accept, max_tree_depth=10, adapt_mass_matrix=mass)
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=chains,
        chain_method="sequential",
        progress_bar=False,
    )
    init = w0 + 1e-4 * jax.random.normal(jax.random.PRNGKey(seed + 1), (chains, w0.size))
    t = time.time()
    mcmc.run(jax.random.PRNGKey(seed), init_params=init)
    ws = mcmc.get_samples(group_by_chain=True)
    Ls = jax.vmap(jax.vmap(L))(ws)
    x = np.asarray(nbeta * (Ls - Lstar))
    ess = float(effective_sample_size(x))
    rhat = float(split_gelman_rubin(x))
    est = float(x.mean())
    se = float(x.std() / math.sqrt(ess))
    div = int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())
    return dict(
        key=key,
        nbeta=nbeta,
        est=est,
        se=se,
        ess=ess,
        rhat=rhat,
        divergences=div,
        secs=time.time() - t,
        lam=m["lambda"],
    )


if __name__ == "__main__":
    keys = sys.argv[1].split(",")
    nbetas = [float(v) for v in sys.argv[2].split(",")]
    mass = not (len(sys.argv) > 3 and sys.argv[3] == "identity")
    for k in keys:
        for nb in nbetas:
            row = {**run(k, nb, mass=mass), "mass": "adapted" if mass else "identity"}
            print(json.dumps(row), flush=True)
