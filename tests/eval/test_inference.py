import numpy as np
import pytest
import torch
from torch import nn

from ssmamba.eval.inference import class_probabilities, dihedral_views, predict_proba


class CornerProbe(nn.Module):
    """Logits from the top-left pixel only: changes under every rotation/flip, so TTA must average it away."""

    def forward(self, x):
        return torch.stack([x[:, 0, 0, 0], -x[:, 0, 0, 0]], dim=1) * 3


def test_dihedral_views_are_the_eight_distinct_symmetries():
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    views = dihedral_views(image)
    assert len(views) == 8
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8
    assert torch.equal(views[0], image)


def test_tta_probabilities_are_invariant_to_rotation_and_flip():
    torch.manual_seed(0)
    model, images = CornerProbe(), torch.randn(5, 3, 6, 6)
    plain = class_probabilities(model, images)
    assert not torch.allclose(plain, class_probabilities(model, torch.rot90(images, 1, (2, 3))))
    reference = class_probabilities(model, images, tta=True)
    for view in dihedral_views(images):
        torch.testing.assert_close(class_probabilities(model, view, tta=True), reference)
    torch.testing.assert_close(reference.sum(1), torch.ones(5))


@pytest.mark.parametrize("tta", [False, True])
def test_predict_proba_keeps_order_labels_and_training_mode(tta):
    torch.manual_seed(0)
    images, labels = torch.randn(10, 3, 6, 6), torch.arange(10) % 2
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=4)
    model = CornerProbe().train()
    probs, got = predict_proba(model, loader, progress=False, tta=tta)
    assert model.training and probs.shape == (10, 2) and probs.dtype == np.float32
    np.testing.assert_array_equal(got, labels.numpy())
    np.testing.assert_allclose(probs, class_probabilities(model, images, tta).numpy(), rtol=1e-6)
