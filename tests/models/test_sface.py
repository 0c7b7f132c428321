import numpy as np
import pytest
import torch

from facekd.assets import resolve
from facekd.models.teachers.sface import SFace, dequantize_blocks, sface_onnxruntime_session


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_dequantize_blocks_known_values():
    q = np.array([[1, 2, 3, 4, 5]], dtype=np.int8)
    scale = np.array([[0.5, 2.0, 10.0]], dtype=np.float32)  # blocks of 2 along axis 1: [0,1] [2,3] [4]
    zp = np.array([[1, 0, 5]], dtype=np.int8)
    out = dequantize_blocks(q, scale, zp, axis=1, block_size=2)
    np.testing.assert_allclose(out, [[0.0, 0.5, 6.0, 8.0, 0.0]])
    per_axis = dequantize_blocks(np.array([[2, 4], [2, 4]], np.int8), np.array([1.0, 3.0], np.float32), None, 0, 0)
    np.testing.assert_allclose(per_axis, [[2, 4], [6, 12]])


def test_parity_with_onnxruntime_on_real_orl_faces(sface, orl_batch):
    images, _ = orl_batch
    session = sface_onnxruntime_session(resolve("sface"), outputs=("fc1", "bn1"))
    raw = images.float().numpy()  # the graph normalises 0-255 input itself
    ort = [session.run(["fc1", "bn1"], {"data": raw[i:i + 1]}) for i in range(len(raw))]
    ort_emb = np.concatenate([e for e, _ in ort])
    ort_bn1 = np.concatenate([m for _, m in ort])
    with torch.no_grad():
        out = sface.forward_all(sface.preprocess(images))
    emb, bn1 = out["embedding"].numpy(), out["bn1_map"].numpy()
    emb_diff, emb_cos = np.abs(emb - ort_emb).max(), _cos(emb, ort_emb).min()
    map_diff, map_cos = np.abs(bn1 - ort_bn1).max(), _cos(bn1, ort_bn1).min()
    print(f"\nSFace port vs onnxruntime on {len(raw)} ORL faces: embedding max|diff| {emb_diff:.2e}, "
          f"min cosine {emb_cos:.7f}; bn1 map max|diff| {map_diff:.2e}, min cosine {map_cos:.7f}")
    assert emb_cos > 0.9999 and map_cos > 0.9999
    assert emb_diff < 1e-3 * np.abs(ort_emb).max()
    # the public entry point gives the same embedding from uint8 images
    np.testing.assert_allclose(sface.features(images).numpy(), emb, atol=1e-5)


def test_preprocess_is_the_graph_normalisation(sface):
    pre = sface.preprocess
    assert (pre.size, pre.bgr, pre.scale, pre.mean, pre.std) == (112, False, 1.0, (127.5,) * 3, (128.0,) * 3)
    x = torch.zeros(1, 3, 112, 112, dtype=torch.uint8)
    x[0, :, 0, 0] = torch.tensor([0, 128, 255], dtype=torch.uint8)  # known RGB pixel
    y = pre(x)
    assert y[0, :, 0, 0].tolist() == [-127.5 / 128, 0.5 / 128, 127.5 / 128]


def test_features_shapes_and_face_identity(sface, orl_batch):
    images, labels = orl_batch
    from facekd.models import build_teacher

    pooled = build_teacher({"name": "sface", "feature": "bn1"})
    spatial = build_teacher({"name": "sface", "feature": "bn1_map"})
    emb = sface.features(images)
    assert emb.shape == (6, 128) and sface.feature_dim == 128
    assert pooled.features(images).shape == (6, 1024) and pooled.feature_dim == 1024
    assert spatial.features(images).shape == (6, 1024, 7, 7) and spatial.feature_shape == (1024, 7, 7)
    # a face teacher: each face is closer to the other image of the same person than to anyone else
    e = torch.nn.functional.normalize(emb, dim=1)
    sim = e @ e.T
    sim.fill_diagonal_(-2)
    assert (labels[sim.argmax(1).numpy()] == labels).all()


def test_teacher_stays_frozen_and_in_eval(sface):
    sface.train()
    assert not sface.training and not any(m.training for m in sface.modules())
    assert not any(p.requires_grad for p in sface.parameters())
    with pytest.raises(RuntimeError, match="frozen"):
        sface.requires_grad_(True)
    assert sface.signature["weights"] == "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"


def test_bad_feature_and_input_size():
    from facekd.models import build_teacher

    with pytest.raises(ValueError, match="bn1_map"):
        build_teacher({"name": "sface", "feature": "pool5"})
    with pytest.raises(ValueError, match="112"):
        SFace().bn1_map(torch.zeros(1, 3, 64, 64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda(sface, orl_batch):
    images, _ = orl_batch
    cpu = sface.features(images)
    gpu = sface.to("cuda").features(images)
    sface.to("cpu")
    assert gpu.is_cuda
    assert torch.nn.functional.cosine_similarity(cpu, gpu.cpu()).min() > 0.999


def test_weights_path_option(tmp_path):
    from facekd.models import ModelWeightsError, build_teacher

    with pytest.raises(ModelWeightsError, match=r"teacher\.weights=.*no such file.*face_recognition_sface_2021dec_int8bq\.onnx"):
        build_teacher({"name": "sface", "weights": str(tmp_path / "missing.onnx")})
    explicit = build_teacher({"name": "sface", "weights": str(resolve("sface"))})
    assert explicit.signature["weights"] == "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"
