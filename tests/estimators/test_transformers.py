"""LLC of a tiny HuggingFace causal LM (built from a config, no download): the plumbing end to end.

A 2-layer GPT-2 with 16-dimensional embeddings and a 32-token vocabulary is trained for a few hundred
steps on a synthetic next-token task, then estimate_llc runs on it with devinterp's evaluate(model, batch)
convention (dict batches of input_ids, per-token cross-entropy): the full LLC, the LLC restricted to one
transformer block (params name patterns) and to one attention head (boolean masks). The chains are short
(the statistics of the estimator are tested elsewhere): every result must be finite and converged or
flagged, the restrictions must give smaller estimates than the whole model, and the parameters outside
a restriction must stay at w*.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

transformers = pytest.importorskip("transformers")
# vmap over scaled_dot_product_attention falls back to a per-sample loop and says so at every call
pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")

from slt_tms.estimators import estimate_llc  # noqa: E402
from slt_tms.potentials import causal_lm_loss, from_module  # noqa: E402

VOCAB, EMBD, HEADS, SEQ, ROWS = 32, 16, 2, 8, 64
HEAD_DIM = EMBD // HEADS
SHORT = {"sampler": "mala", "num_burnin": 100, "num_draws": 200, "progress": False}


def _tokens(rows: int = ROWS, seed: int = 0) -> torch.Tensor:
    """x_0 uniform, x_{t+1} = x_t + (1 or 2) mod V: the best next-token loss is log 2 per token."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, VOCAB, (rows, 1), generator=g)
    steps = torch.randint(1, 3, (rows, SEQ - 1), generator=g)
    return torch.cat([start, start + steps.cumsum(1)], 1) % VOCAB


def per_token_ce(model, batch):
    """devinterp's evaluate convention for a language model: mean next-token cross-entropy."""
    logits = model(input_ids=batch["input_ids"]).logits
    return F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), batch["input_ids"][:, 1:].reshape(-1))


def _model(seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(
        n_layer=2, n_head=HEADS, n_embd=EMBD, vocab_size=VOCAB, n_positions=16, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(cfg)


@pytest.fixture(scope="module")
def trained():
    model = _model()
    ids = _tokens()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        loss = per_token_ce(model, {"input_ids": ids})
        loss.backward()
        opt.step()
    assert float(loss.detach()) < math.log(2) + 0.05  # near a minimum (below log 2: it memorises the 64 rows)
    return model.eval(), ids


def _head_masks(layer: int = 0, head: int = 0) -> dict[str, torch.Tensor]:
    """The parameters of one attention head of GPT-2: its q, k, v columns of c_attn (Conv1D weights are
    (in, out)) and its input rows of the output projection c_proj."""
    pre = f"transformer.h.{layer}.attn."
    w = torch.zeros(EMBD, 3 * EMBD, dtype=torch.bool)
    b = torch.zeros(3 * EMBD, dtype=torch.bool)
    proj = torch.zeros(EMBD, EMBD, dtype=torch.bool)
    for j in range(3):
        cols = slice(j * EMBD + head * HEAD_DIM, j * EMBD + (head + 1) * HEAD_DIM)
        w[:, cols] = True
        b[cols] = True
    proj[head * HEAD_DIM : (head + 1) * HEAD_DIM] = True
    return {pre + "c_attn.weight": w, pre + "c_attn.bias": b, pre + "c_proj.weight": proj}


def _finite_and_converged_or_flagged(res) -> None:
    assert math.isfinite(res.llc) and math.isfinite(res.se) and res.se > 0, res.summary()
    assert res.converged or (not res.ok and any("not converged" in f for f in res.flags)), res.summary()


def test_full_layer_and_head_llc_of_a_tiny_gpt2(trained):
    model, ids = trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = {"input_ids": ids}
    with pytest.warns(RuntimeWarning, match="not trustworthy"):  # short chains: flagged, not silent
        full = estimate_llc(model, data, evaluate=per_token_ce, **SHORT)
    with pytest.warns(RuntimeWarning, match="not trustworthy"):
        layer = estimate_llc(model, data, evaluate=per_token_ce, params=["transformer.h.0.*"], **SHORT)
    masks = _head_masks()
    with pytest.warns(RuntimeWarning, match="not trustworthy"):
        head = estimate_llc(model, data, evaluate=per_token_ce, params=list(masks), masks=masks, **SHORT)
    for res in (full, layer, head):
        _finite_and_converged_or_flagged(res)
        assert res.n == ROWS and res.frac_below_anchor < 0.2, res.summary()
    n_total = sum(p.numel() for p in model.parameters())
    assert full.config["potential"]["num_parameters"] == n_total
    assert layer.config["potential"]["parameters"] == [
        k for k, _ in model.named_parameters() if k.startswith("transformer.h.0.")
    ]
    assert head.config["potential"]["restricted_to"] == 3 * EMBD * HEAD_DIM + 3 * HEAD_DIM + HEAD_DIM * EMBD
    assert head.llc < layer.llc < full.llc, (full.headline(), layer.headline(), head.headline())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the caller's model


def test_parameters_outside_a_restriction_stay_at_w_star(trained):
    """The restricted loss of v equals the model's loss with ONLY the selected entries moved to v."""
    model, ids = trained
    data = {"input_ids": ids}
    masks = _head_masks()
    named = dict(model.named_parameters())
    cases = [
        (from_module(model, data, evaluate=per_token_ce, params=["transformer.h.0.*"]), None),
        (from_module(model, data, evaluate=per_token_ce, params=list(masks), masks=masks), masks),
    ]
    g = torch.Generator().manual_seed(1)
    for pot, m in cases:
        selected = pot.info["parameters"]
        v = pot.w_star + 0.05 * torch.randn(pot.w_star.shape, generator=g)
        got = float(pot.loss(v.unsqueeze(0), pot.data.full())[0])
        moved = copy.deepcopy(model)
        sizes = [int(m[k].sum()) if m else named[k].numel() for k in selected]
        delta = iter(torch.split(v - pot.w_star, sizes))
        with torch.no_grad():
            for k, p in moved.named_parameters():
                if k in selected:
                    d = next(delta)
                    if m:
                        p[m[k]] += d
                    else:
                        p += d.view_as(p)
        with torch.no_grad():
            ref = float(per_token_ce(moved, data))
            anchor = float(per_token_ce(model, data))
        assert got == pytest.approx(ref, rel=1e-5) and abs(got - anchor) > 1e-4


def test_huggingface_outputs_masks_and_minibatches(trained):
    model, ids = trained
    data = {"input_ids": ids}
    ref = from_module(model, data, evaluate=per_token_ce)
    # causal_lm_loss and an evaluate returning the ModelOutput (its .loss) are the same potential
    for ev in (causal_lm_loss, lambda m, b: m(**b, labels=b["input_ids"])):
        pot = from_module(model, data, evaluate=ev)
        assert pot.anchor_loss() == pytest.approx(ref.anchor_loss(), rel=1e-5)
    # padding: positions with attention_mask 0 are not predicted
    mask = torch.ones_like(ids)
    mask[::2, SEQ - 2 :] = 0
    padded = {"input_ids": ids.masked_fill(mask == 0, 0), "attention_mask": mask}
    with torch.no_grad():
        logits = model(**padded).logits[:, :-1]
        labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        want = float(F.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1), ignore_index=-100))
    assert float(causal_lm_loss(model, padded).detach()) == pytest.approx(want, rel=1e-6)
    # per-chain minibatches: the model branches on its inputs, so they go chain by chain (not vmap)
    pot = from_module(model, padded, evaluate=causal_lm_loss)
    assert pot.info["grad_mode"] == "vmap" and pot.info["grad_mode_per_chain"] == "loop"
    with pytest.warns(RuntimeWarning, match="not trustworthy"):
        mb = estimate_llc(
            model, padded, evaluate=causal_lm_loss, batch_size=16, num_burnin=20, num_draws=40,
            bias_check=False, progress=False, step_size=1e-4,
        )
    assert mb.sampler == "sgld" and math.isfinite(mb.llc)

    class Rows(Dataset):  # dict rows, collated into dict batches by the default collate_fn
        def __len__(self) -> int:
            return ROWS

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {"input_ids": ids[i]}

    loader = DataLoader(Rows(), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    with pytest.warns(RuntimeWarning, match="not trustworthy"):
        st = estimate_llc(
            model, loader, evaluate=per_token_ce, num_burnin=20, num_draws=40, bias_check=False,
            progress=False, step_size=1e-4,
        )
    assert st.n == ROWS and st.config["potential"]["data"]["kind"] == "DataLoader" and math.isfinite(st.llc)


def test_a_model_output_with_named_losses_is_read_at_its_logits(trained):
    model, ids = trained
    # a (m, T, V) language model with a named loss: a clear error pointing at causal_lm_loss
    with pytest.raises(ValueError, match="causal_lm_loss"):
        from_module(model, (ids, ids), loss="cross_entropy")
    # the last position's logits as a classifier: the ModelOutput's .logits are used
    class LastToken(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lm = model

        def forward(self, x):
            out = self.lm(input_ids=x)
            return type(out)(logits=out.logits[:, -1])

    clf = LastToken()
    target = ids[:, -1]
    pot = from_module(clf, (ids[:, :-1], target), loss="cross_entropy")
    with torch.no_grad():
        want = float(F.cross_entropy(model(input_ids=ids[:, :-1]).logits[:, -1], target))
    assert pot.anchor_loss() == pytest.approx(want, rel=1e-6)


def test_the_chain_loop_gives_the_fallbacks_numbers_on_a_transformer(trained):
    """grad_mode="loop" (faster than vmap's per-sample fallback on larger transformers on CPU): the same
    losses and gradients as the default path, on shared and on per-chain batches, and the record says so."""
    from slt_tms.potentials import with_grad_mode

    model, ids = trained
    pot = from_module(model, {"input_ids": ids}, evaluate=per_token_ce)
    loop = with_grad_mode(pot, "loop")
    assert loop.info["grad_mode"] == "loop" and with_grad_mode(pot, "vmap").info["grad_mode"] == "vmap"
    g = torch.Generator().manual_seed(1)
    w = pot.w_star + 1e-3 * torch.randn(3, pot.d, generator=g)
    idx = torch.randint(0, ROWS, (3, 16), generator=g)
    for batch in (pot.data.full(), pot.data.take(idx)):
        for a, b in zip(pot.value_and_grad(w, batch), loop.value_and_grad(w, batch), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
