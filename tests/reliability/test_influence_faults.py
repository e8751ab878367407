"""A device that lies about its sample count (issue 14, finding 1), against the real process.

Two honest scripted devices (~100 samples, deltas of norm 0.1) and one claiming 10⁶ samples
(the default ``--max-num-samples``) with a delta of norm 999 (under the default
``--max-update-norm 1000``) answer one round of ``python -m aggregator`` over Mosquitto. With
the default influence bounds the published global change stays below norm 1 and the history
names the capped weight and the clipped delta; with the bounds switched off
(``--weight-cap-factor 0 --clip-factor 0``, plain FedAvg) the same liar moves the model by
hundreds, which is what the bounds prevent.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from reliability.kit import AggregatorFactory, Scenario, ScriptedDevice
from update_kit import l2_norm, make_update

from aggregator.modelfile import ModelFile
from aggregator.store import AggregatorStore
from edge_client.protocol import Weights
from edge_client.quantize import dequantize_update

pytestmark = [pytest.mark.broker, pytest.mark.slow]

Devices = Callable[..., ScriptedDevice]
HONEST = {"dev-a": 100, "dev-b": 110}
LIAR, LIAR_SAMPLES, LIAR_NORM = "mallory", 1_000_000, 999.0


def global_change(agg_state: AggregatorStore) -> float:
    """The L2 norm of version 1's weights minus version 0's."""
    before, after = (dequantize_update(Weights.decode(saved[0]).tensors)
                     for saved in (agg_state.checkpoint(0), agg_state.checkpoint(1))
                     if saved is not None)
    return l2_norm({name: after[name].astype("float64") - before[name] for name in before})


def one_round_with_a_liar(aggregator: AggregatorFactory, devices: Devices,
                          model_file: ModelFile, **flags: object) -> tuple[float, dict]:
    """Run one round (honest devices first, then the liar); the global change and history."""
    agg = aggregator(rounds=1, min_clients=3, clients_per_round=3, round_timeout=15,
                     codec="fp32", **flags)
    devs = [devices(name, samples) for name, samples in HONEST.items()]
    devs.append(devices(LIAR, LIAR_SAMPLES))
    for device in devs:
        liar = device.client_id == LIAR
        update = make_update(device.wait_round(1), device.client_id,
                             LIAR_SAMPLES if liar else HONEST[device.client_id], model_file,
                             norm=LIAR_NORM if liar else 0.1)
        device.send(update)
        reply = device.wait_reply(update.nonce)
        assert reply.accepted, (device.client_id, reply)
    assert agg.wait_exit(30) == 0, agg.child.tail(30)
    (line,) = agg.history()
    return global_change(AggregatorStore(agg.state_dir)), line


@pytest.mark.fault(
    name="one device lies about its sample count",
    injected="2 honest devices (100 and 110 samples, delta norm 0.1) and 1 claiming 10⁶ "
             "samples with a delta of norm 999, all within the default --max-num-samples and "
             "--max-update-norm; the same round again with the influence bounds off",
    expected="default flags: the global change has norm <= 1 and history.jsonl names the "
             "capped weight and the clipped delta; bounds off: the liar moves the model by "
             "more than 100")
def test_a_liar_cannot_control_the_global_model(aggregator: AggregatorFactory,
                                                devices: Devices, model_file: ModelFile,
                                                scenario: Scenario) -> None:
    change, line = one_round_with_a_liar(aggregator, devices, model_file)
    assert change <= 1.0, change
    bounds = line["bounds"]
    assert bounds["capped"][LIAR]["claimed"] == LIAR_SAMPLES, bounds
    assert bounds["capped"][LIAR]["weight"] < 1000, bounds
    assert set(bounds["clipped"]) == {LIAR}, bounds
    scenario.observe(f"default bounds: global change norm {change:.3f}; history capped "
                     f"{LIAR} to weight {bounds['capped'][LIAR]['weight']}, clipped its "
                     f"delta by {bounds['clipped'][LIAR]['scale']:.2e}")


@pytest.mark.fault(
    name="one device lies about its sample count, bounds off",
    injected="as 'one device lies about its sample count', with --weight-cap-factor 0 "
             "--clip-factor 0 (plain sample-weighted FedAvg)",
    expected="the liar controls the model (the change the bounds prevent): global change "
             "norm > 100")
def test_without_bounds_the_liar_controls_the_model(aggregator: AggregatorFactory,
                                                    devices: Devices, model_file: ModelFile,
                                                    scenario: Scenario) -> None:
    change, line = one_round_with_a_liar(aggregator, devices, model_file,
                                         weight_cap_factor=0, clip_factor=0)
    assert change > 100, change
    assert line["bounds"]["capped"] == {} and line["bounds"]["clipped"] == {}, line
    scenario.observe(f"bounds off: global change norm {change:.1f} (share of the liar's "
                     f"weight {LIAR_SAMPLES / (LIAR_SAMPLES + sum(HONEST.values())):.4%})")
