"""The network of ``jic-classifier``: a 2D MONAI ResNet with a necrosis head on layer2 and
either a softmax class head or the lesion-extent head (ordinal steps at the JIC boundaries).

torch and MONAI are imported inside :func:`build_network`, so importing this module is cheap.
"""

from __future__ import annotations

from avnbench.api import jic_classes
from avnbench_jic_classifier.config import JicClassifierConfig

# JIC boundaries in weight-bearing units: the medial thirds and the acetabular edge
JIC_STEPS_WB = (1 / 3, 2 / 3, 1.0)
RESNET_LAYERS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
RESNET_WIDTHS = (64, 128, 256, 512)


def build_network(config: JicClassifierConfig):  # noqa: C901 - one nested module
    """A 2D MONAI ResNet with ``n_input_channels`` inputs, randomly initialised (MONAI's ResNet
    only fetches weights when asked to; nothing is downloaded), with a 1×1 necrosis head on
    layer2 and the configured class head. ``network(x)`` gives class logits (log-probabilities
    for ``lesion_extent``); ``forward_train(x)`` also the necrosis logits on the layer2 grid."""
    import math

    import torch
    import torch.nn.functional as F
    from monai.networks.nets import ResNet

    class JicNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.resnet = ResNet(
                block="basic",
                layers=list(RESNET_LAYERS[config.architecture]),
                block_inplanes=list(RESNET_WIDTHS),
                spatial_dims=2,
                n_input_channels=n_input_channels(config),
                conv1_t_size=7,
                conv1_t_stride=config.stem_stride,
                no_max_pool=not config.stem_max_pool,
                widen_factor=config.widen_factor,
                num_classes=len(jic_classes()),
            )
            if config.head == "lesion_extent":
                self.register_buffer("steps", torch.tensor(JIC_STEPS_WB).view(1, 3, 1, 1))
                self.log_softness = torch.nn.Parameter(torch.tensor(math.log(0.05)))
            if config.head == "lesion_extent":
                # the classes are read off the layer2 necrosis map: no deeper layers needed
                self.resnet.layer3 = self.resnet.layer4 = torch.nn.Identity()
                self.resnet.fc = torch.nn.Identity()
            elif config.pooling == "max":
                self.resnet.avgpool = torch.nn.AdaptiveMaxPool2d(1)
            layer2_channels = int(RESNET_WIDTHS[1] * config.widen_factor)
            self.lesion_head = torch.nn.Conv2d(layer2_channels, 1, kernel_size=1)

        def forward(self, x):
            """Class logits (log-probabilities for the lesion_extent head)."""
            return self.forward_train(x)[0]

        def forward_train(self, x):
            """(class logits, necrosis logits on the layer2 grid)."""
            r = self.resnet
            h = r.act(r.bn1(r.conv1(x)))
            if not r.no_max_pool:
                h = r.maxpool(h)
            mid = r.layer2(r.layer1(h))
            lesion_logits = self.lesion_head(mid)
            if config.head == "softmax":
                return r.fc(torch.flatten(r.avgpool(r.layer4(r.layer3(mid))), 1)), lesion_logits
            return self.extent_logits(x, lesion_logits), lesion_logits

        def extent_logits(self, x, lesion_logits):
            lesion = torch.sigmoid(
                F.interpolate(lesion_logits.float(), size=x.shape[-2:], mode="bilinear",
                              align_corners=False)
            )  # fmt: skip
            lateral, superior = x[:, 1:2].float(), x[:, 2:3].float()
            # beyond[:, k]: how surely a pixel lies lateral to boundary k, upper half only (the
            # JIC reading ignores necrosis below the head centre)
            beyond = torch.sigmoid((lateral - self.steps) / self.log_softness.exp())
            beyond = beyond * (superior >= 0)
            above = (lesion * beyond).flatten(2).amax(dim=2)  # (N, 3): P(type > k), decreasing
            ones, zeros = torch.ones_like(above[:, :1]), torch.zeros_like(above[:, :1])
            cumulative = torch.cat([ones, above, zeros], dim=1)
            probabilities = (cumulative[:, :-1] - cumulative[:, 1:]).clamp_min(1e-6)
            return torch.log(probabilities / probabilities.sum(dim=1, keepdim=True))

    return JicNet()


def n_input_channels(config: JicClassifierConfig) -> int:
    """The grey slice, plus two landmark coordinate channels when ``position_channels``."""
    return 3 if config.position_channels else 1
