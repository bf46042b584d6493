"""Conv4: the four-block convolutional embedding of Vinyals et al. (2016), used by MAML and SNAIL."""

from __future__ import annotations

from torch import Tensor, nn


class Conv4(nn.Module):
    """Four blocks of 3x3 conv -> batch norm -> ReLU -> 2x2 max-pool, then flatten.

    Finn et al. (2017) use 64 filters on 28x28 Omniglot and 32 filters on 84x84 miniImageNet.
    With 28x28 inputs the spatial size goes 28 -> 14 -> 7 -> 3 -> 1, so the embedding has
    ``hidden`` features; with 84x84 it goes 84 -> 42 -> 21 -> 10 -> 5 (``25 * hidden`` features).

    Args:
        in_channels: image channels (1 for Omniglot, 3 for RGB).
        hidden: filters per conv layer.
        image_size: side of the square input image, used to compute ``out_features``.
        batch_norm: use batch normalisation after each conv (as in the papers).
        track_running_stats: keep running statistics in batch norm. Meta-learners normally
            use each batch's own statistics (``False``), as in the MAML paper.

    Shapes:
        input ``[..., in_channels, image_size, image_size]`` -> output ``[..., out_features]``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        hidden: int = 64,
        image_size: int = 28,
        batch_norm: bool = True,
        track_running_stats: bool = False,
    ) -> None:
        super().__init__()
        if in_channels < 1 or hidden < 1 or image_size < 16:
            raise ValueError(
                f"Conv4 needs in_channels >= 1, hidden >= 1 and image_size >= 16, got {in_channels}, {hidden}, {image_size}"
            )
        self.init_args = dict(in_channels=in_channels, hidden=hidden, image_size=image_size, batch_norm=batch_norm,
                              track_running_stats=track_running_stats)
        self.in_channels = in_channels
        self.image_size = image_size
        #: one example's shape, checked by every learner (:func:`rnnmeta.nets.factory.check_backbone_input`)
        self.input_shape = (in_channels, image_size, image_size)
        self.input_params = ("in_channels", "image_size")
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(4):
            layers.append(nn.Conv2d(channels, hidden, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(hidden, track_running_stats=track_running_stats))
            layers.append(nn.ReLU())
            layers.append(nn.MaxPool2d(2))
            channels = hidden
        self.blocks = nn.Sequential(*layers)
        side = image_size // 16  # four 2x2 max-pools
        self.out_features = hidden * side * side

    def forward(self, x: Tensor) -> Tensor:
        expected = self.input_shape
        if x.dim() < 3 or tuple(x.shape[-3:]) != expected:
            raise ValueError(
                f"Conv4 expects images [..., {expected[0]}, {expected[1]}, {expected[2]}], got {list(x.shape)}; "
                "set in_channels/image_size to match the data"
            )
        return self.blocks(x.reshape(-1, *expected)).reshape(*x.shape[:-3], self.out_features)
