"""Losses: closed forms, agreement with a plain-loop reference, the queue."""

import math

import pytest
import torch
import torch.nn.functional as F

from medcl_lite import pairing
from medcl_lite.losses import MoCoQueue, info_nce, nt_xent


def loop_supcon(z1, z2, temperature, pos_mask=None):
    """The loss of docs/methods.md, "Shared loss: SimCLR form", in plain loops (the reference)."""
    z = F.normalize(torch.cat([z1, z2]).double(), dim=1)
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        denom = sum(math.exp(float(z[i] @ z[a]) / temperature) for a in range(2 * n) if a != i)
        positives = []
        for p in range(2 * n):
            if p == i:
                continue
            same = (p % n) == (i % n)
            extra = pos_mask is not None and bool(pos_mask[i % n, p % n])
            if same or extra:
                positives.append(p)
        total += -sum(math.log(math.exp(float(z[i] @ z[p]) / temperature) / denom) for p in positives) / len(positives)
    return total / (2 * n)


def test_identical_embeddings_give_log_2n_minus_1():
    for n in (2, 5, 16):
        z = torch.ones(n, 8)
        assert nt_xent(z, z).item() == pytest.approx(math.log(2 * n - 1), rel=1e-6)


def test_nt_xent_matches_loop_reference():
    torch.manual_seed(0)
    z1, z2 = torch.randn(6, 5), torch.randn(6, 5)
    assert nt_xent(z1, z2, 0.1).item() == pytest.approx(loop_supcon(z1, z2, 0.1), rel=1e-5)


def test_multi_positive_matches_loop_reference():
    torch.manual_seed(1)
    z1, z2 = torch.randn(8, 4), torch.randn(8, 4)
    mask = pairing.temporal(torch.tensor([0, 0, 1, 1, 1, 2, 3, 3]))
    assert nt_xent(z1, z2, 0.5, pos_mask=mask).item() == pytest.approx(loop_supcon(z1, z2, 0.5, mask), rel=1e-5)


def test_nt_xent_is_symmetric_in_views_and_scale_invariant():
    torch.manual_seed(2)
    z1, z2 = torch.randn(7, 3), torch.randn(7, 3)
    assert nt_xent(z1, z2).item() == pytest.approx(nt_xent(z2, z1).item(), rel=1e-6)
    assert nt_xent(3 * z1, 0.5 * z2).item() == pytest.approx(nt_xent(z1, z2).item(), rel=1e-5)


def test_perfectly_separated_pairs_have_low_loss():
    z = torch.eye(4) * 10
    assert nt_xent(z, z, temperature=0.05).item() < 1e-6 + 3 * math.exp(-1 / 0.05) * 2


def test_stable_at_tiny_temperature():
    torch.manual_seed(3)
    z1, z2 = torch.randn(4, 8), torch.randn(4, 8)
    loss = nt_xent(z1, z2, temperature=1e-4)
    assert torch.isfinite(loss)


def test_info_nce_closed_form_single_positive():
    q = torch.tensor([[1.0, 0.0]])
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    mask = torch.tensor([[True, False, False]])
    t = 0.5
    expected = -math.log(math.exp(2) / (math.exp(2) + math.exp(0) + math.exp(-2)))
    assert info_nce(q, keys, mask, t).item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_averages_over_positives():
    q = torch.tensor([[1.0, 0.0]])
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    mask = torch.tensor([[True, True, False]])
    z = math.exp(1) + math.exp(0) + math.exp(-1)
    expected = -(math.log(math.exp(1) / z) + math.log(math.exp(0) / z)) / 2
    assert info_nce(q, keys, mask, 1.0).item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_errors_name_the_problem():
    q, k = torch.randn(2, 3), torch.randn(4, 3)
    with pytest.raises(ValueError, match="no positive"):
        info_nce(q, k, torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="pos_mask"):
        info_nce(q, k, torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="temperature"):
        info_nce(q, k, torch.ones(2, 4, dtype=torch.bool), temperature=0)


def test_gradients_flow_to_both_views():
    z1 = torch.randn(4, 3, requires_grad=True)
    z2 = torch.randn(4, 3, requires_grad=True)
    nt_xent(z1, z2).backward()
    assert z1.grad.abs().sum() > 0 and z2.grad.abs().sum() > 0


def test_queue_wraps_around_and_keeps_metadata():
    queue = MoCoQueue(size=5, dim=2)
    for start in (0, 3):  # 3 keys, then 3 more: the last wraps to slot 0
        keys = torch.tensor([[float(start + i), 1.0] for i in range(3)])
        queue.enqueue(keys, patient=torch.arange(start, start + 3), depth=torch.full((3,), 0.5), sample=torch.arange(3))
    assert queue.meta["patient"].tolist() == [5, 1, 2, 3, 4]
    assert int(queue.ptr) == 1 and int(queue.filled) == 5
    assert torch.allclose(queue.keys[0], F.normalize(torch.tensor([5.0, 1.0]), dim=0))


def test_queue_larger_batch_than_queue_keeps_newest():
    queue = MoCoQueue(size=3, dim=2)
    queue.enqueue(torch.ones(5, 2), patient=torch.arange(5), depth=torch.zeros(5), sample=torch.arange(5))
    assert sorted(queue.meta["patient"].tolist()) == [2, 3, 4]


def test_queue_persists_in_state_dict(tmp_path):
    queue = MoCoQueue(size=4, dim=3)
    queue.enqueue(
        torch.randn(3, 3), patient=torch.tensor([7, 8, 9]), depth=torch.tensor([0.1, 0.2, 0.3]), sample=torch.arange(3)
    )
    torch.save(queue.state_dict(), tmp_path / "q.pt")
    restored = MoCoQueue(size=4, dim=3)
    restored.load_state_dict(torch.load(tmp_path / "q.pt", weights_only=True))
    assert torch.equal(restored.keys, queue.keys)
    assert restored.meta["patient"].tolist() == queue.meta["patient"].tolist()
    assert int(restored.ptr) == 3


def test_queue_checkpoint_from_before_the_sample_field_loads_with_samples_unknown():
    old = MoCoQueue(size=4, dim=3, fields=("patient", "depth"))  # the queue as saved before
    old.enqueue(torch.randn(2, 3), patient=torch.tensor([7, 8]), depth=torch.tensor([0.1, 0.2]))
    restored = MoCoQueue(size=4, dim=3)
    restored.load_state_dict(old.state_dict())  # strict
    assert torch.equal(restored.keys, old.keys) and restored.meta["patient"][:2].tolist() == [7, 8]
    assert restored.meta["sample"].tolist() == [-1, -1, -1, -1]  # matches nothing


def test_empty_queue_slots_never_positive():
    queue = MoCoQueue(size=4, dim=3)
    mask = pairing.positives("temporal", {"patient": torch.tensor([0, 1]), "depth": torch.zeros(2)}, queue.meta)
    assert not mask.any()
    mask = pairing.positives("positional", {"patient": torch.tensor([0, 1]), "depth": torch.zeros(2)}, queue.meta)
    assert not mask.any()


def test_queue_validates_inputs():
    with pytest.raises(ValueError):
        MoCoQueue(0, 4)
    queue = MoCoQueue(4, 3)
    with pytest.raises(ValueError, match="keys"):
        queue.enqueue(torch.randn(2, 5), patient=torch.zeros(2), depth=torch.zeros(2), sample=torch.zeros(2))
    with pytest.raises(ValueError, match="metadata"):
        queue.enqueue(torch.randn(2, 3), patient=torch.zeros(2))
