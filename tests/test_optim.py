"""Every optimizer by name trains the tiny config (loss falls) and resumes exactly."""

import jax
import numpy as np
import pytest

from genjax.train.trainer import Trainer

LR = {"adamw": 3e-3, "sgd": 0.3, "lion": 3e-4, "muon": 0.02}


@pytest.mark.parametrize("name", sorted(LR))
def test_optimizer_trains_and_resumes(tiny_config, tmp_path, name):
    c = tiny_config
    c.optim.update(name=name, lr=LR[name])
    c.train.steps, c.checkpoint.every = 6, 3
    c.model.scan_layers = name == "muon"  # Muon on stacked [layers, ...] matrices too
    run = lambda wd, stop=None: Trainer(c, tmp_path / wd, devices=jax.devices()[:1]).run(stop)
    full = run("full")
    assert np.mean([full.losses[s] for s in (4, 5)]) < full.losses[0] - 0.3, full.losses
    first = run("split", stop=3)
    second = run("split")
    assert min(second.losses) == 3
    resumed = {**first.losses, **second.losses}
    assert [resumed[s] for s in range(6)] == [full.losses[s] for s in range(6)]
    for a, b in zip(jax.tree.leaves(jax.device_get(full.state.params)),
                    jax.tree.leaves(jax.device_get(second.state.params)), strict=True):
        np.testing.assert_array_equal(a, b)
