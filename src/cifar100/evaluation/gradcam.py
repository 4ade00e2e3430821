"""Grad-CAM (Selvaraju et al., 2017): where the network found evidence for a class. The
gradient of the class score, averaged over the last feature map's positions, weights that map's
channels; their positive sum, upsampled to the image, is the heat map."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cifar100.errors import CheckpointError
from cifar100.inference import as_input


def feature_map_module(net: nn.Module, image_size: int = 32) -> nn.Module:
    """The module that produces the network's last spatial feature map (a 4-D output larger
    than 1x1), found with hooks on one forward pass: for our models the stage stack right
    before global pooling, for any other architecture whatever plays that part."""
    producers: list[nn.Module] = []

    def record(module, inputs, output):
        if isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[2] * output.shape[3] > 1:
            producers.append(module)

    hooks = [m.register_forward_hook(record) for m in net.modules() if m is not net]
    p = next(net.parameters())
    was_training = net.training
    net.eval()  # the probe must not touch BatchNorm's running statistics
    try:
        with torch.no_grad():
            net(torch.zeros(1, 3, image_size, image_size, device=p.device, dtype=p.dtype))
    finally:
        net.train(was_training)
        for h in hooks:
            h.remove()
    if not producers:
        raise CheckpointError("the network has no spatial feature map to compute Grad-CAM on")
    return producers[-1]  # hooks fire as modules finish, so the last one is the deepest map


def grad_cam(classifier: nn.Module, images: np.ndarray, targets: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """images: uint8 (N, H, W, 3). Returns heat maps float (N, H, W) scaled to 0..1 per image,
    and the classes they explain (the predicted ones unless `targets` is given)."""
    net = classifier.net if hasattr(classifier, "net") else classifier
    was_training = classifier.training
    # Eval mode before any forward pass: BatchNorm must use (and never update) its running stats.
    classifier.eval()
    layer = feature_map_module(net, images.shape[1])
    captured: list[torch.Tensor] = []
    hook = layer.register_forward_hook(lambda module, inputs, output: captured.append(output))
    device = next(classifier.parameters()).device
    x = as_input(images, device)
    try:
        with torch.enable_grad():
            # The input asks for a gradient so the graph exists even if every weight is frozen.
            x.requires_grad_(True)
            logits = classifier(x)
            chosen = logits.argmax(1) if targets is None else torch.as_tensor(targets, device=device)
            # Samples are independent in eval mode, so one backward of the summed scores gives
            # every image its own gradient.
            score = logits.gather(1, chosen[:, None]).sum()
            (grads,) = torch.autograd.grad(score, captured[-1])
    finally:
        hook.remove()
        classifier.train(was_training)
    activations = captured[-1].detach()
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activations).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]
    cam = cam / cam.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    return cam.cpu().numpy(), chosen.cpu().numpy()
