"""The weight average: its update rule, the swap in and out of a model, and its saved state."""

from __future__ import annotations

import pytest
import torch

from vla_demo.ema import WeightAverage


def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    model.register_buffer("scale", torch.tensor([2.0, 3.0]))
    model.register_buffer("count", torch.tensor(7))  # integer buffers are not averaged
    return model


def nudge(model: torch.nn.Module, by: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(by)


def test_update_follows_the_warmed_up_decay_by_hand():
    model = tiny()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    ema = WeightAverage(model, decay=0.9)
    assert "count" not in ema.shadow and "scale" in ema.shadow
    expected = start["0.weight"].clone()
    for n in range(20):
        nudge(model, 1.0)
        d = min(0.9, (1 + n) / (10 + n))  # 0.1, 0.18, ...: reaches 0.9 at n = 80, so this is the warm-up
        expected = d * expected + (1 - d) * model.state_dict()["0.weight"]
        ema.update(model)
    torch.testing.assert_close(ema.shadow["0.weight"], expected)
    torch.testing.assert_close(ema.shadow["scale"], start["scale"])  # a constant buffer stays constant
    assert ema.updates == 20
    # the average lags the raw weights, which moved by 20
    lag = (model.state_dict()["0.weight"] - ema.shadow["0.weight"]).mean().item()
    assert 0 < lag < 20


def test_decay_reaches_its_ceiling():
    ema = WeightAverage(tiny(), decay=0.99)
    ema.updates = 10_000
    assert ema.current_decay() == 0.99


def test_applied_swaps_the_average_in_and_the_raw_weights_back():
    model = tiny()
    ema = WeightAverage(model, decay=0.5)
    nudge(model, 1.0)
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    with ema.applied(model) as m:
        assert torch.equal(m.state_dict()["0.weight"], ema.shadow["0.weight"])
        assert not torch.equal(m.state_dict()["0.weight"], raw["0.weight"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, raw[k]), k
    with pytest.raises(RuntimeError), ema.applied(model):
        raise RuntimeError("a failed save")
    assert torch.equal(model.state_dict()["0.weight"], raw["0.weight"])  # restored on errors too


def test_saved_state_round_trips_and_a_foreign_one_is_refused():
    model = tiny()
    ema = WeightAverage(model, decay=0.9)
    nudge(model, 0.5)
    ema.update(model)
    other = WeightAverage(tiny(), decay=0.9)
    other.restore(ema.tensors(), ema.scalars())
    assert other.updates == 1
    for k in ema.shadow:
        assert torch.equal(other.shadow[k], ema.shadow[k]), k
    with pytest.raises(ValueError, match="weight average"):
        other.restore({}, {"updates": 0})
    bigger = WeightAverage(torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.LayerNorm(5)), decay=0.9)
    with pytest.raises(ValueError, match="weight average"):
        bigger.restore({k: v for k, v in ema.tensors().items() if "scale" not in k}, ema.scalars())


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_decay_outside_the_open_interval_is_refused(decay):
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(tiny(), decay=decay)


def test_decays_above_the_warm_up_cap_of_a_run_give_the_same_average():
    model = tiny()
    averages = {d: WeightAverage(model, decay=d) for d in (0.5, 0.99, 0.999)}
    for _ in range(50):  # after 50 updates the cap is 51 / 60 = 0.85: 0.99 and 0.999 never reach theirs
        nudge(model, 1.0)
        for ema in averages.values():
            ema.update(model)
    torch.testing.assert_close(averages[0.99].shadow["0.weight"], averages[0.999].shadow["0.weight"], rtol=0, atol=0)
    assert not torch.equal(averages[0.5].shadow["0.weight"], averages[0.99].shadow["0.weight"])
