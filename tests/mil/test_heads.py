from __future__ import annotations

import pytest
import torch
from sklearn.metrics import roc_auc_score

from ssmamba.mil import MIL_HEADS, create_mil_head
from ssmamba.mil.bags import BagDataset, BagRecord
from ssmamba.mil.base import StreamingAttentionPool, drop_instances, subsample_bag
from ssmamba.mil.inference import predict
from ssmamba.mil.training import MILTrainConfig, train_head

HEADS = sorted(MIL_HEADS)


def _bag(batch=2, size=37, dim=12):
    features = torch.randn(batch, size, dim)
    coords = torch.stack([torch.randperm(64)[:size] for _ in range(batch)])
    return features, torch.stack([coords % 8, coords // 8], dim=-1) * 512


@pytest.mark.parametrize("name", HEADS)
def test_shapes_and_single_bag_input(name):
    head = create_mil_head(name, in_dim=12, num_classes=3).eval()
    features, coords = _bag()
    out = head.forward_with_attention(features, coords)
    assert out.logits.shape == (2, 3) and out.attention.shape == (2, 37)
    assert torch.isfinite(out.attention).all()
    single = head(features[0], coords[0])
    torch.testing.assert_close(single, out.logits[:1], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="expects features"):
        head(torch.randn(2, 5, 7))


@pytest.mark.parametrize("name", HEADS)
def test_padding_mask_equals_the_unpadded_bag(name):
    head = create_mil_head(name, in_dim=12, num_classes=2).eval()
    features, coords = _bag()
    mask = torch.ones(2, 37, dtype=torch.bool)
    mask[1, 20:] = False
    padded = head.forward_with_attention(features, coords, mask)
    alone = head.forward_with_attention(features[1:, :20], coords[1:, :20])
    torch.testing.assert_close(padded.logits[1], alone.logits[0], rtol=1e-4, atol=1e-5)
    assert torch.isnan(padded.attention[1, 20:]).all()


@pytest.mark.parametrize("name", HEADS)
def test_chunked_inference_equals_the_full_forward_pass(name):
    head = create_mil_head(name, in_dim=12, num_classes=2).eval()
    # train a few steps so no parameter is at its (possibly zero) initial value
    optimiser = torch.optim.SGD(head.parameters(), lr=0.05)
    for _ in range(3):
        features, coords = _bag(batch=1)
        head.train()
        torch.nn.functional.cross_entropy(head(features, coords), torch.tensor([1])).backward()
        optimiser.step()
    head.eval()
    features, coords = _bag(batch=1, size=61)
    full = head.forward_with_attention(features, coords)
    chunked = head.predict_bag(features[0], coords[0], chunk_size=8)
    torch.testing.assert_close(chunked.logits.cpu(), full.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(chunked.attention.cpu(), full.attention, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("name", HEADS)
def test_predict_bag_runs_a_cpu_bag_on_a_gpu_head(name):
    # bags are loaded on the CPU; every head's inference must take them to its own device
    head = create_mil_head(name, in_dim=12, num_classes=2).eval()
    features, coords = _bag(batch=1)
    expected = head.predict_bag(features[0], coords[0])
    on_gpu = head.cuda().predict_bag(features[0], coords[0])
    torch.testing.assert_close(on_gpu.logits.cpu(), expected.logits, rtol=1e-3, atol=1e-4)


def test_abmil_is_permutation_invariant():
    head = create_mil_head("abmil", in_dim=12, num_classes=2).eval()
    features, _ = _bag(batch=1)
    shuffled = features[:, torch.randperm(37)]
    torch.testing.assert_close(head(features), head(shuffled), rtol=1e-5, atol=1e-6)


def test_mamba_mil_scans_in_hilbert_order_of_the_coordinates():
    from ssmamba.mil.mamba_mil import MambaMIL, TileOrder

    torch.manual_seed(0)
    head = MambaMIL(in_dim=12, num_classes=2)
    for parameter in head.parameters():  # move the zero-initialised branches so the scan matters
        torch.nn.init.normal_(parameter, std=0.1) if parameter.ndim > 1 else None
    head.eval()
    features, coords = _bag(batch=1)
    shuffle = torch.randperm(37)
    # the scan order comes from the coordinates, so the file order of the tiles does not matter...
    out = head.forward_with_attention(features, coords)
    shuffled = head.forward_with_attention(features[:, shuffle], coords[:, shuffle])
    torch.testing.assert_close(out.logits, shuffled.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.attention[:, shuffle], shuffled.attention, rtol=1e-4, atol=1e-5)
    # ...unless told to scan in the given order, where it does
    head.order = TileOrder.GIVEN
    assert not torch.allclose(head(features, coords), head(features[:, shuffle], coords[:, shuffle]), atol=1e-4)


def test_streaming_pool_is_the_exact_softmax_mean():
    hidden, scores = torch.randn(2, 50, 4), torch.randn(2, 50) * 20
    pool = StreamingAttentionPool()
    for start in range(0, 50, 7):
        pool.update(hidden[:, start:start + 7], scores[:, start:start + 7])
    expected = torch.einsum("bn,bnd->bd", torch.softmax(scores, -1), hidden)
    torch.testing.assert_close(pool.result(), expected, rtol=1e-5, atol=1e-6)


def test_subsampling_and_instance_dropout_keep_pairs_together():
    features = torch.arange(100.0)[:, None].repeat(1, 3)
    coords = torch.arange(100)[:, None].repeat(1, 2)
    generator = torch.Generator().manual_seed(0)
    sub_features, sub_coords = subsample_bag(features, coords, 10, generator)
    assert len(sub_features) == 10 and (sub_features[:, 0].long() == sub_coords[:, 0]).all()
    assert (sub_coords[1:, 0] > sub_coords[:-1, 0]).all()  # original order kept
    assert subsample_bag(features, coords, 200)[0] is features
    dropped, dropped_coords = drop_instances(features, coords, 0.5, generator)
    assert 20 < len(dropped) < 80 and (dropped[:, 0].long() == dropped_coords[:, 0]).all()
    assert len(drop_instances(features[:1], coords[:1], 0.99, generator)[0]) == 1


@pytest.mark.parametrize("name", HEADS)
def test_each_head_learns_a_task_where_one_instance_decides_the_bag(name, key_instance_bags, tmp_path):
    import h5py

    bags = key_instance_bags(140, dim=16)
    records = []
    for index, (features, coords, label) in enumerate(bags):
        path = tmp_path / f"bag{index}.h5"
        with h5py.File(path, "w") as h5:
            h5["features"], h5["coords"] = features.numpy(), coords.numpy()
        records.append(BagRecord(f"bag{index}", label, path, f"bag{index}"))
    train, test = BagDataset(records[:100]), BagDataset(records[100:])
    torch.manual_seed(0)
    head = create_mil_head(name, in_dim=16, num_classes=2)
    train_head(head, train, MILTrainConfig(epochs=8, lr=1e-3), progress=False)
    predictions = predict(head, test)
    assert roc_auc_score(predictions.y_true, predictions.probs[:, 1]) >= 0.95
    if name == "transmil":
        # its scores are the class token's attention in the second layer, after the first layer has already
        # spread the key instance's content over other tokens: they need not peak on the key instance itself
        return
    # the attention pooling points at the decisive instance in most positive bags
    hits = [int(attention.argmax()) == int(test[i][0][:, :4].sum(1).argmax())
            for i, attention in enumerate(predictions.attention) if predictions.y_true[i] == 1]
    assert sum(hits) / len(hits) >= 0.7


def test_inputs_are_standardised_with_training_statistics_saved_in_the_head(tmp_path):
    import h5py

    from ssmamba.mil import load_mil_model, save_mil_model
    from ssmamba.mil.training import feature_statistics

    records = []
    for index in range(4):
        features = torch.randn(10 + index, 5) * torch.tensor([1.0, 10.0, 100.0, 0.1, 1.0]) + 50
        path = tmp_path / f"b{index}.h5"
        with h5py.File(path, "w") as h5:
            h5["features"], h5["coords"] = features.numpy(), torch.zeros(len(features), 2, dtype=torch.long).numpy()
        records.append(BagRecord(f"b{index}", index % 2, path, f"b{index}"))
    dataset = BagDataset(records)
    mean, std = feature_statistics(dataset)
    everything = torch.cat([dataset[i][0] for i in range(4)])
    torch.testing.assert_close(mean, everything.mean(0))
    torch.testing.assert_close(std, everything.std(0, unbiased=False), rtol=1e-4, atol=1e-4)

    head = create_mil_head("abmil", in_dim=5, num_classes=2)
    train_head(head, dataset, MILTrainConfig(epochs=1), progress=False)
    standardiser = head.instance_encoder[0]
    torch.testing.assert_close(standardiser(everything).mean(0), torch.zeros(5), atol=1e-4, rtol=0)
    save_mil_model(head, tmp_path / "head", head_name="abmil", head_kwargs={}, class_names=["a", "b"])
    loaded, config = load_mil_model(tmp_path / "head")
    torch.testing.assert_close(loaded.eval()(dataset[0][0]), head.eval()(dataset[0][0]))
    assert config["class_names"] == ["a", "b"] and config["in_dim"] == 5
