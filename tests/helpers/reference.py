"""Float64 comparisons of an engine run with an independent reference loop.

The reference loops build torchvision's ResNet-18 with ten classes (what `resnet18-10`
is) and train it themselves; these helpers take copies of weights and compare them.
"""

from __future__ import annotations

import torch
import torchvision

State = dict[str, torch.Tensor]
PARAMETERS = {n for n, _ in torchvision.models.resnet18(num_classes=10).named_parameters()}
# Two correct float64 loops differ by about 2e-7 (relative) on the reference setups; the
# mistakes tried differ by 1e-3 (weight decay left out) and far more.
STATE_RTOL = 1e-5
LOSS_RTOL = 2e-6


def snapshot(model: torch.nn.Module) -> State:
    """A detached copy of a model's parameters and buffers."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(engine: State, reference: State, initial: State, what: str) -> None:
    """Integer buffers equal; the change from `initial` of the parameters (and, apart,
    of the float buffers) equal within `STATE_RTOL` of its norm."""
    assert engine.keys() == reference.keys(), what
    floats = [k for k in reference if reference[k].is_floating_point()]
    for name, keys in (("parameters", [k for k in floats if k in PARAMETERS]),
                       ("buffers", [k for k in floats if k not in PARAMETERS])):
        moved_e = torch.cat([(engine[k] - initial[k]).flatten() for k in keys])
        moved_r = torch.cat([(reference[k] - initial[k]).flatten() for k in keys])
        error = float((moved_e - moved_r).norm() / moved_r.norm())
        assert error < STATE_RTOL, f"{what}: {name} differ by {error:.1e} (relative)"
    for k in reference:
        if not reference[k].is_floating_point():
            assert torch.equal(engine[k], reference[k]), f"{what}: {k}"
