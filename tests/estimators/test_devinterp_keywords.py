"""devinterp's keywords (1.x and 2.x) as estimate_llc translates them (docs: migrating from devinterp).

Configuration only: nothing is sampled here (the end-to-end translation is in test_llc.py)."""

from __future__ import annotations

import pytest

from slt_tms.estimators import LLCConfig
from slt_tms.estimators.llc import _resolve_config


def test_devinterp_1x_optimizer_kwargs_and_its_old_temperature_name():
    cfg = _resolve_config(None, {"optimizer_kwargs": {"lr": 1e-4, "localization": 100.0, "nbeta": 50.0},
                                 "num_burnin_steps": 10, "num_steps_bw_draws": 1})
    assert (cfg.sampler, cfg.step_size, cfg.localization, cfg.nbeta, cfg.num_burnin) == (
        "sgld", 1e-4, 100.0, 50.0, 10)
    assert _resolve_config(None, {"optimizer_kwargs": {"temperature": 30.0}}).nbeta == 30.0
    with pytest.raises(ValueError, match="two values for nbeta"):
        _resolve_config(None, {"optimizer_kwargs": {"temperature": 30.0, "nbeta": 40.0}})
    # devinterp's defaults of settings that do not exist here pass; other values are refused
    ok = {"noise_level": 1.0, "weight_decay": 0.0, "bounding_box_size": None}
    assert _resolve_config(None, {"optimizer_kwargs": ok}).sampler == "sgld"
    for bad in ({"noise_level": 0.5}, {"weight_decay": 1e-3}, {"bounding_box_size": 1.0}):
        with pytest.raises(ValueError, match="changes the target density"):
            _resolve_config(None, {"optimizer_kwargs": bad})
    with pytest.raises(ValueError, match="not a setting of this estimator"):
        _resolve_config(None, {"optimizer_kwargs": {"momentum": 0.9}})


def test_devinterp_2x_keywords():
    cfg = _resolve_config(None, {"lr": 1e-3, "n_beta": 20.0, "localization": 0.0, "num_burnin_steps": 0,
                                 "sampling_method": "sgmcmc_sgld", "gradient_accumulation_steps": 1})
    assert (cfg.sampler, cfg.step_size, cfg.nbeta, cfg.localization, cfg.num_burnin) == (
        "sgld", 1e-3, 20.0, 0.0, 0)
    rms = _resolve_config(None, {"sampling_method": "rmsprop_sgld", "sampling_method_kwargs": {"lr": 1e-3}})
    assert (rms.sampler, rms.preconditioner, rms.step_size) == ("sgld", "rmsprop", 1e-3)
    with pytest.raises(ValueError, match="only devinterp's SGLD"):
        _resolve_config(None, {"sampling_method": "sgnht"})
    for key, value in (("num_steps_bw_draws", 5), ("gradient_accumulation_steps", 4), ("cores", 2)):
        with pytest.raises(ValueError, match="devinterp's"):
            _resolve_config(None, {key: value})
    with pytest.raises(ValueError, match="progress=False"):
        _resolve_config(None, {"verbose": False})
    # our own fields still win when given explicitly, and a config object is the base
    base = LLCConfig(num_chains=8)
    assert _resolve_config(base, {"n_beta": 5.0}).num_chains == 8
