"""Neuron attribution: mean activations against plain PyTorch, the projection algebra, groups and the null control."""

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import PROMPTS
from dpo_toxicity.activations import encode
from dpo_toxicity.architectures import all_value_vectors, architecture_of, decoder_layers, output_projection
from dpo_toxicity.attribution import (
    LABELS,
    REDUCING,
    NeuronActivations,
    activation_change_correlations,
    activation_change_summary,
    activation_falls,
    group_shares,
    layer_cancellation,
    layer_projection,
    load_neuron_table,
    magnitude_shrink_shares,
    mean_neuron_activations,
    neuron_table,
    parameter_cosines,
    per_layer_reduction,
    relative_activation_change,
    save_neuron_table,
    top_ranked_group_shares,
    toxic_neuron_share,
)
from dpo_toxicity.interventions import SetNeurons
from dpo_toxicity.null_control import STATISTICS, null_shares, null_summary, orthogonal_direction, random_directions

NEW_TOKENS = 4


def hooked_means(lm, prompts, new_tokens=NEW_TOKENS, zeroed=None):
    """Mean last-position activations and MLP outputs over every generation step, with plain forward hooks.

    ``zeroed`` maps a layer to neuron indices set to 0 by the hook (an ablation done in plain PyTorch).
    """
    arch = architecture_of(lm.model)
    n_layers = len(decoder_layers(lm.model, arch))
    neurons, outputs, handles = [[] for _ in range(n_layers)], [[] for _ in range(n_layers)], []
    for layer in range(n_layers):
        module = output_projection(lm.model, arch, layer)

        def ablate(module, args, layer=layer):
            activations = args[0].clone()
            activations[..., (zeroed or {}).get(layer, [])] = 0
            return (activations,)

        def record(module, args, output, layer=layer):
            neurons[layer].append(args[0][:, -1].double())
            outputs[layer].append(output[:, -1].double())

        handles += [module.register_forward_pre_hook(ablate), module.register_forward_hook(record)]
    encoding = encode(lm, prompts, 32)
    try:
        with torch.no_grad():
            lm.model.generate(
                **encoding,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=lm.tokenizer.pad_token_id,
            )
    finally:
        for handle in handles:
            handle.remove()
    assert all(len(steps) == new_tokens for steps in neurons)
    mean = torch.stack([torch.cat(steps).mean(0) for steps in neurons])
    mlp_output = torch.stack([torch.cat(steps).mean(0) for steps in outputs])
    return mean, mlp_output


def test_mean_activations_equal_plain_generate_with_hooks(tiny):
    ours = mean_neuron_activations(tiny, PROMPTS, new_tokens=NEW_TOKENS)
    mean, mlp_output = hooked_means(tiny, PROMPTS)
    assert ours.count == len(PROMPTS) * NEW_TOKENS
    assert ours.mean.dtype == torch.float64 and ours.mean.shape == tiny.shape[:2]
    torch.testing.assert_close(ours.mean, mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.mean_mlp_output, mlp_output, rtol=1e-5, atol=1e-6)


def test_mean_activations_do_not_depend_on_batching(tiny):
    batched = mean_neuron_activations(tiny, PROMPTS, new_tokens=NEW_TOKENS, batch_size=3)
    singles = [mean_neuron_activations(tiny, [prompt], new_tokens=NEW_TOKENS) for prompt in PROMPTS]
    torch.testing.assert_close(batched.mean, sum(single.mean for single in singles) / 3, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(
        batched.mean_mlp_output, sum(single.mean_mlp_output for single in singles) / 3, rtol=1e-4, atol=1e-6
    )


def test_the_read_position_is_never_padding(tiny):
    encoding = encode(tiny, PROMPTS, 32)
    assert not encoding["attention_mask"].all()  # the batch is padded ...
    assert encoding["attention_mask"][:, -1].all()  # ... on the left, so the last position is real


def test_an_intervention_is_read_after_it_applies(tiny):
    ablation = SetNeurons.ablate(pd.DataFrame({"layer": [0, 1], "neuron": [3, 7]}))
    ours = mean_neuron_activations(tiny, PROMPTS, new_tokens=NEW_TOKENS, intervention=ablation)
    mean, mlp_output = hooked_means(tiny, PROMPTS, zeroed={0: [3], 1: [7]})
    assert ours.mean[0, 3] == 0 and ours.mean[1, 7] == 0
    torch.testing.assert_close(ours.mean, mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.mean_mlp_output, mlp_output, rtol=1e-5, atol=1e-6)


def test_neuron_projections_sum_to_the_layer_projection_of_the_mlp_output(tiny):
    activations = mean_neuron_activations(tiny, PROMPTS, new_tokens=NEW_TOKENS)
    direction = torch.randn(tiny.shape[2], generator=torch.Generator().manual_seed(1))
    table = neuron_table(
        activations, activations, all_value_vectors(tiny.model), all_value_vectors(tiny.model), direction
    )
    arch = architecture_of(tiny.model)
    unit = direction.double() / direction.double().norm()
    expected = table.groupby("layer")["projection_base"].sum().to_numpy().copy()
    for layer in range(tiny.shape[0]):
        bias = output_projection(tiny.model, arch, layer).bias
        if bias is not None:  # GPT-2's c_proj writes its bias at every position
            expected[layer] += float(bias.double() @ unit)
    np.testing.assert_allclose(
        layer_projection(activations.mean_mlp_output, direction).numpy(), expected, rtol=1e-5, atol=1e-6
    )


def synthetic_pair(d_model=64, n_layers=2, d_mlp=300, shift=0.3, noise=0.1, seed=0):
    """Value vectors and mean activations where DPO shrinks every |m̄| and, on top, lowers the write along
    a planted direction: m̄^dpo = 0.8 m̄^pre − shift (v · planted) + noise. Weights do not change."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(n_layers, d_mlp, d_model, generator=generator, dtype=torch.float64)
    planted = random_directions(1, d_model, seed=seed + 1)[0]
    activation_base = torch.randn(n_layers, d_mlp, generator=generator, dtype=torch.float64)
    activation_dpo = (
        0.8 * activation_base
        - shift * (values @ planted)
        + noise * torch.randn(n_layers, d_mlp, generator=generator, dtype=torch.float64)
    )
    empty = torch.zeros(n_layers, d_model, dtype=torch.float64)
    return (NeuronActivations(activation_base, empty, 1), NeuronActivations(activation_dpo, empty, 1), values, planted)


def test_projection_delta_and_groups_follow_their_definitions():
    base, dpo, values, planted = synthetic_pair()
    values_dpo = values + 0.01 * torch.randn(
        values.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64
    )
    table = neuron_table(base, dpo, values, values_dpo, 3 * planted)
    row = table.iloc[123]
    layer, neuron = int(row.layer), int(row.neuron)
    v, v_dpo = values[layer, neuron], values_dpo[layer, neuron]
    assert row.cosine == pytest.approx(float(v @ planted / v.norm()))
    assert row.projection_base == pytest.approx(float(base.mean[layer, neuron] * (v @ planted)))
    assert row.projection_dpo == pytest.approx(float(dpo.mean[layer, neuron] * (v_dpo @ planted)))
    assert row.delta == pytest.approx(row.projection_base - row.projection_dpo)
    toxic, positive = table.cosine > 0, table.activation_base >= 0
    assert (
        table.group.astype(str)
        == np.select([toxic & positive, toxic & ~positive, ~toxic & positive], ["TP", "TN", "AP"], "AN")
    ).all()
    reducing_by_delta = table.group_by_delta.isin(REDUCING)
    assert (reducing_by_delta == (table.delta > 0)).all()
    assert (table.group_by_delta.astype(str).str[:2] == table.group.astype(str)).all()
    # TP-: activation decreased; TN+: more negative; AP+: increased; AN-: less negative
    by_change = table.group_by_activation_change.astype(str)
    decreased = table.activation_change > 0
    assert (decreased[by_change.isin(["TP-", "TN+"])]).all()
    assert (~decreased[by_change.isin(["AP+", "AN-"])]).all()


def test_shares_of_the_four_reducing_groups_sum_to_one():
    base, dpo, values, planted = synthetic_pair()
    table = neuron_table(base, dpo, values, values, planted)
    shares = group_shares(table, "delta")
    assert shares.shares.sum() == pytest.approx(1.0)
    assert shares.reduction_total == pytest.approx(shares.positive_total)
    assert shares.net == pytest.approx(table.delta.sum())
    assert shares.neuron_counts.sum() == len(table)
    assert shares.table().loc[list(REDUCING), "neurons"].sum() == (table.delta > 0).sum()
    by_change = group_shares(table, "activation_change")
    assert by_change.shares.sum() == pytest.approx(1.0)
    assert by_change.net == pytest.approx(shares.net)
    assert "TP-" in repr(shares) and list(shares.table().index) == list(LABELS)
    with pytest.raises(ValueError):
        group_shares(table, "cosine")


def test_per_layer_reduction_adds_up_to_the_totals():
    base, dpo, values, planted = synthetic_pair()
    table = neuron_table(base, dpo, values, values, planted)
    layers = per_layer_reduction(table)
    shares = group_shares(table)
    np.testing.assert_allclose(layers[list(REDUCING)].sum().to_numpy(), shares.delta_sums[list(REDUCING)])
    assert layers.reduced.sum() == pytest.approx(shares.positive_total)
    assert (layers.reduced + layers.increased).sum() == pytest.approx(shares.net)


def test_toxic_neuron_share_counts_dampened_neurons_among_the_highest_cosines():
    base, dpo, values, planted = synthetic_pair()
    table = neuron_table(base, dpo, values, values, planted)
    highest = table.sort_values("cosine", ascending=False).head(20)
    dampened = highest[(highest.activation_base >= 0) & (highest.activation_change > 0)]
    share = toxic_neuron_share(table, top=20)
    assert share["neurons"] == len(dampened) > 0
    assert share["share"] == pytest.approx(dampened.delta.sum() / table.delta[table.delta > 0].sum())


def hand_table(cosines, before, after):
    """A neuron table from hand-made numbers: one value vector per cosine, (c, sqrt(1 − c²)) against the probe
    (1, 0), unchanged by DPO, so that Δ = (m̄^pre − m̄^dpo) c exactly. Arguments are ``[n_layers, d_mlp]`` lists."""
    cosine = torch.tensor(cosines, dtype=torch.float64)
    values = torch.stack([cosine, (1 - cosine**2).sqrt()], dim=-1)
    empty = torch.zeros(cosine.shape[0], 2, dtype=torch.float64)
    base = NeuronActivations(torch.tensor(before, dtype=torch.float64), empty, 1)
    dpo = NeuronActivations(torch.tensor(after, dtype=torch.float64), empty, 1)
    return neuron_table(base, dpo, values, values, torch.tensor([1.0, 0.0]))


def test_top_ranked_group_shares_split_the_largest_reductions():
    # Δ: TP− 3, AN− 2 (cosine −1, m̄ −2 → 0), TP− 1, TN+ 0.5 (m̄ −1 → −1.5), then AP+ 0.1, out of the top 3
    table = hand_table([[1.0, -1.0, 1.0, 1.0, -1.0]], [[3.0, -2.0, 1.0, -1.0, 0.1]], [[0.0, 0.0, 0.0, -1.5, 0.2]])
    shares = top_ranked_group_shares(table, top=3)
    assert list(shares.index) == list(REDUCING)
    np.testing.assert_allclose(shares.to_numpy(), [4 / 6, 0.0, 0.0, 2 / 6])
    assert top_ranked_group_shares(table, top=5).sum() == pytest.approx(1.0)


def test_layer_cancellation_sums_each_layers_net_in_magnitude():
    # layer 0: Δ = 3 and −1 (net 2); layer 1: Δ = 2 and −2 (net 0); positive total 5
    table = hand_table([[1.0, 1.0], [1.0, 1.0]], [[3.0, 0.0], [2.0, 0.0]], [[0.0, 1.0], [0.0, 2.0]])
    assert layer_cancellation(table) == pytest.approx(2 / 5)
    assert layer_cancellation(table) >= abs(table.delta.sum()) / table.delta[table.delta > 0].sum()


def test_magnitude_shrink_shares_count_neurons_whose_activation_shrinks_in_magnitude():
    # TP−: 1 → 0.5 shrinks, 1 → −2 crosses zero and grows; TN+: −1 → −2 grows; AP+: 1 → 3 grows;
    # AN−: −2 → −1 shrinks
    table = hand_table([[1.0, 1.0, 1.0, -1.0, -1.0]], [[1.0, 1.0, -1.0, 1.0, -2.0]], [[0.5, -2.0, -2.0, 3.0, -1.0]])
    assert list(table.group_by_delta) == ["TP-", "TP-", "TN+", "AP+", "AN-"]
    np.testing.assert_allclose(magnitude_shrink_shares(table).to_numpy(), [0.5, 0.0, 0.0, 1.0])


def test_activation_falls_compares_the_most_toxic_neurons_with_all():
    # the two highest cosines both fall; of all eight neurons, two of eight fall
    cosines = [[0.9, 0.8, 0.1, 0.2, -0.3, -0.1, 0.05, -0.5]]
    table = hand_table(cosines, [[1.0] * 8], [[0.0, 0.5, 1.0, 1.5, 2.0, 1.0, 1.0, 1.2]])
    falls = activation_falls(table, top=2)
    assert falls["share"] == 1.0 and falls["share_all"] == pytest.approx(0.25)
    assert falls["z"] == pytest.approx((1.0 - 0.25) / np.sqrt(0.25 * 0.75 / 2))


def test_parameter_cosines_are_one_per_tensor_and_match_torch():
    generator = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Linear(4, 3))
    moved = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Linear(4, 3))
    moved.load_state_dict(model.state_dict())
    with torch.no_grad():
        moved[0].weight.add_(0.3 * torch.randn(4, 5, generator=generator))
        model[1].bias.zero_()
        moved[1].bias.zero_()
    cosines = parameter_cosines(model, moved, chunk=3)  # slices smaller than a tensor: the sums still add up
    assert list(cosines.index) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    before, after = model[0].weight.detach().flatten(), moved[0].weight.detach().flatten()
    expected = torch.nn.functional.cosine_similarity(before, after, dim=0)
    assert cosines["0.weight"] == pytest.approx(float(expected), rel=1e-6)
    assert cosines["0.bias"] == pytest.approx(1.0) and cosines["1.bias"] == 1.0  # equal, and equal zeros
    with pytest.raises(ValueError, match="different parameters"):
        parameter_cosines(model, torch.nn.Linear(5, 4))


@pytest.mark.parametrize("suffix", [".parquet", ".csv.gz"])
def test_neuron_table_round_trips_through_a_file(tmp_path, suffix):
    base, dpo, values, planted = synthetic_pair()
    table = neuron_table(base, dpo, values, values, planted)
    loaded = load_neuron_table(save_neuron_table(table, tmp_path / f"neurons{suffix}"))
    pd.testing.assert_frame_equal(loaded, table, check_exact=False, rtol=1e-15)


def test_relative_change_is_clipped_and_summarised_per_group():
    base, dpo, values, planted = synthetic_pair()
    table = neuron_table(base, dpo, values, values, planted)
    relative = relative_activation_change(table)
    raw = 100 * table.activation_change / table.activation_base
    low, high = np.percentile(raw, [10, 90])
    assert relative.min() == pytest.approx(low) and relative.max() == pytest.approx(high)
    summary = activation_change_summary(table)
    assert list(summary.index) == ["all", *REDUCING]
    assert summary.loc["all", "median"] == pytest.approx(20.0, abs=5)  # m̄^dpo ≈ 0.8 m̄^pre
    correlations = activation_change_correlations(table)
    assert list(correlations.columns) == ["x", "y", "r", "p"] and correlations.p.between(0, 1).all()


def test_null_shares_of_one_direction_equal_the_neuron_table_statistics():
    base, dpo, values, planted = synthetic_pair()
    values_dpo = values * 1.01
    directions = random_directions(3, values.shape[-1], seed=3)
    null = null_shares(base, dpo, values, values_dpo, directions)
    assert list(null.columns) == list(STATISTICS) and len(null) == 3
    for row, direction in enumerate(directions):
        expected = group_shares(neuron_table(base, dpo, values, values_dpo, direction)).statistics()
        np.testing.assert_allclose(null.iloc[row][list(STATISTICS)].to_numpy(), expected[list(STATISTICS)], rtol=1e-10)


def test_random_and_orthogonal_directions_are_unit_and_seeded():
    directions = random_directions(5, 16, seed=2)
    torch.testing.assert_close(directions.norm(dim=-1), torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(directions, random_directions(5, 16, seed=2))
    probe = torch.randn(16)
    orthogonal = orthogonal_direction(probe, seed=4)
    assert float(orthogonal.norm()) == pytest.approx(1.0)
    assert float(orthogonal @ probe.double()) == pytest.approx(0.0, abs=1e-12)


def test_null_control_singles_out_the_planted_direction_but_not_a_random_one():
    base, dpo, values, planted = synthetic_pair()
    null = null_shares(base, dpo, values, values, random_directions(200, values.shape[-1], seed=10))
    planted_summary = null_summary(group_shares(neuron_table(base, dpo, values, values, planted)), null)
    assert planted_summary.loc["net", "z"] > 5
    assert planted_summary.loc["net", "percentile"] == 100
    decoy = random_directions(1, values.shape[-1], seed=99)[0]
    decoy_summary = null_summary(group_shares(neuron_table(base, dpo, values, values, decoy)), null)
    assert abs(decoy_summary.loc["net", "z"]) < 2.5
    assert list(decoy_summary.columns) == ["observed", "null_mean", "null_sd", "z", "percentile"]
    with pytest.raises(ValueError):
        null_summary(group_shares(neuron_table(base, dpo, values, values, planted), "activation_change"), null)


def test_specificity_grades_z_scores():
    from dpo_toxicity.null_control import specificity

    assert [specificity(z) for z in (0.5, -1.9, 2.5, -2.9, 3.0, -7.0)] == [
        "not specific",
        "not specific",
        "marginal",
        "marginal",
        "specific",
        "specific",
    ]
