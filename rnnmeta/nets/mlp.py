"""A fully connected network: the sinusoid regressor of Finn et al. (2017) (2 hidden layers of 40 ReLU)."""

from __future__ import annotations

from torch import Tensor, nn


class MLP(nn.Module):
    """Linear -> ReLU layers over the last dimension.

    Args:
        in_features: input features (1 for the sinusoid task).
        hidden: sizes of the hidden layers (MAML's sinusoid network: ``[40, 40]``).
        out_features: size of a final linear layer; ``0`` ends with the last hidden layer
            (then the network is an embedding and ``out_features`` is ``hidden[-1]``).

    Shapes:
        input ``[..., in_features]`` -> output ``[..., out_features]``.
    """

    def __init__(self, in_features: int = 1, hidden: list[int] = [40, 40], out_features: int = 0) -> None:  # noqa: B006
        super().__init__()
        if in_features < 1 or any(h < 1 for h in hidden) or out_features < 0:
            raise ValueError(
                f"MLP needs positive sizes, got in_features={in_features}, hidden={hidden}, out_features={out_features}"
            )
        self.init_args = dict(in_features=in_features, hidden=list(hidden), out_features=out_features)
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        if out_features:
            layers.append(nn.Linear(width, out_features))
            width = out_features
        self.layers = nn.Sequential(*layers)
        self.in_features = in_features
        self.out_features = width
        #: one example's shape, checked by every learner (:func:`rnnmeta.nets.factory.check_backbone_input`)
        self.input_shape = (in_features,)
        self.input_params = ("in_features",)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"MLP expects inputs [..., {self.in_features}], got {list(x.shape)}; set in_features to match the data"
            )
        return self.layers(x)
