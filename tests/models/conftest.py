import numpy as np
import pytest
import torch


@pytest.fixture(scope="session")
def sface():
    """The real SFace teacher (embedded ONNX, dequantized into torch)."""
    from facekd.models import build_teacher

    return build_teacher({"name": "sface"})


@pytest.fixture(scope="session")
def orl_batch(orl):
    """Six real ORL faces (three people, two images each), framed square at 112 px: uint8 B x 3 x 112 x 112."""
    from facekd.data.datasets import load_images

    picks = [i for y in (0, 1, 2) for i in [j for j, lab in enumerate(orl.labels) if lab == y][:2]]
    images = load_images(orl.root, [orl.paths[i] for i in picks], 112)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), np.array([orl.labels[i] for i in picks])
