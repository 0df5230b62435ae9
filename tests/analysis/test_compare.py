"""`genjax compare`: hop timing per run and across model size, against the runs' own rows."""

import json

import jax
import numpy as np
import pytest

from genjax.analysis.compare import compare_runs, run_facts
from genjax.config import base_config
from tests.analysis.test_analyze_paths import hop_margins, make_run


def sized_run(steps: int, d_model: int, batch: int = 4, seq_len: int = 16):
    """A synthetic run whose one probe family hops (pattern-matching -> generalizing) at its
    middle row, with a stored config of the given width."""
    run = make_run(np.arange(steps), {"fam/a": hop_margins(np.arange(steps), 8)})
    config = base_config()
    config.model.update(d_model=d_model, n_layers=2, n_heads=2, n_kv_heads=2, head_dim=8,
                        d_ff=2 * d_model, vocab_size=64)
    config.train.update(batch_size=batch, seq_len=seq_len)
    run.attrs["config"] = config.to_json()
    run.tokens_seen = np.arange(steps) * batch * seq_len
    return run, config


def counted_params(config) -> int:
    """The parameter count of the model genjax builds (its arrays, not the formula)."""
    from genjax.model import ModelConfig
    from genjax.model.lm import abstract_model

    _, params = abstract_model(ModelConfig.from_config(config.model))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


def test_hops_per_run_and_their_scaling(tmp_path):
    (small, c_small), (big, c_big) = sized_run(400, 16), sized_run(600, 32)
    runs = [run_facts(small, "small"), run_facts(big, "big")]
    n_small, n_big = counted_params(c_small), counted_params(c_big)
    assert [r.params for r in runs] == [n_small, n_big]
    result = compare_runs(runs, tmp_path)
    hops = {h["run"]: h for h in result["hops"]}
    assert set(hops) == {"small", "big"}
    for name, run, mid in (("small", small, 200), ("big", big, 300)):
        h = hops[name]
        assert h["direction"] == "to_generalizing" and abs(h["step"] - mid) <= 2
        row = int(np.flatnonzero(run.steps == h["step"])[0])
        assert h["tokens"] == run.tokens_seen[row] == h["step"] * 64
    # training FLOPs: tokens x (6 x matmul params + causal attention), by hand
    m = c_small.model  # the input embedding is a lookup, the unembedding a matmul
    matmul = n_small if m.tie_embeddings else n_small - m.vocab_size * m.d_model
    per_token = 6 * matmul + 3 * 2 * m.n_layers * 16 * m.n_heads * m.head_dim
    assert hops["small"]["flops"] == pytest.approx(hops["small"]["tokens"] * per_token,
                                                   rel=1e-12)
    (scaling,) = result["hop_scaling"]
    slope = np.log(hops["big"]["tokens"] / hops["small"]["tokens"]) / np.log(n_big / n_small)
    assert scaling["tokens_vs_params_slope"] == pytest.approx(slope, rel=1e-9)
    stored = json.loads((tmp_path / "compare.json").read_text())
    assert stored["runs"][0]["chinchilla_tokens"] == 20 * n_small
    html = (tmp_path / "compare.html").read_text()
    assert "<h1>Run comparison</h1>" in html and "Hop timing against model size" in html
    for file in stored["figures"].values():
        assert (tmp_path / file).stat().st_size > 0


def test_compare_refuses_a_store_without_config(tmp_path):
    from genjax.stream.store import StreamError

    run = make_run(np.arange(50))
    run.attrs["config"] = "{}"
    with pytest.raises(StreamError, match="no run config"):
        run_facts(run, "bare")
