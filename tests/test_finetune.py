"""The finetune stage end to end on the real ORL faces (smoke size), hand-checked metrics, and refusals."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facekd.data.faces import FaceDataError
from facekd.distill.student_run import STUDENT_FILE
from facekd.engine import ResumeError, TrainConfig, Trainer, save_safetensors
from facekd.finetune import HeadTask, SpecializedModel, finetune, load_finetuned
from facekd.finetune.stage import FinetuneSettings
from facekd.hashing import artifact_checksums
from facekd.metrics import classification_metrics
from facekd.models import build_student
from facekd.runs import RunError, read_json, read_manifest, write_manifest

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TEACHER = {"name": "sface", "feature": "embedding", "feature_shape": [128], "preprocess": {"size": 112},
           "weights": "sha-of-the-sface-file"}
STUDENT_CFG = {"name": "resnet18", "input_size": 64}


def compose(*overrides: str, name: str = "finetune"):
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        recipe = ["recipe=paper"] if name in ("finetune", "distill") else []  # the stage's own defaults
        return hydra_compose(name, overrides=[*recipe, "profile=smoke", *overrides])


def write_student_run(folder: Path, *, teacher=TEACHER, complete=True, split_id=None, seed=0) -> Path:
    """A distill-format run folder (the distill stage's contract) holding a freshly built student."""
    torch.manual_seed(seed)
    student = build_student(STUDENT_CFG, 128)
    save_safetensors(student.state_dict(), folder / STUDENT_FILE)
    extra = {"split_id": split_id, "split_path": "elsewhere.json", "uses_train_images": True} if split_id else {}
    write_manifest(folder, "distill", {"student": STUDENT_CFG, "note": "random init, for tests"}, student=STUDENT_CFG,
                   teacher=teacher, out_dim=128, input_size=64, uses_labels=False, complete=complete,
                   artifacts=artifact_checksums(folder, [STUDENT_FILE]), **extra)
    return folder


@pytest.fixture(scope="module")
def student_run(tmp_path_factory):
    """A real distill smoke run: DCGAN faces generated, SFace features cached, a ResNet-18 student distilled."""
    from facekd.distill.stage import distill
    from facekd.generators import generate

    root = tmp_path_factory.mktemp("upstream")
    generate(compose(f"paths.root={root}", name="generate"))
    return distill(compose(f"paths.root={root}", name="distill"))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, student_run):
    """One finished smoke finetune run: 4 epochs on the 2-shot ORL split, with ONNX export and plots."""
    root = tmp_path_factory.mktemp("runs")
    cfg = compose(f"paths.root={root}", f"finetune.student_run={student_run}")
    metrics = finetune(cfg)
    return root, Path(metrics["run_dir"]), metrics, cfg


def test_run_folder_layout_and_manifest(smoke, student_run):
    root, run, metrics, _ = smoke
    assert run == root / "finetune" / "orl-resnet18-bce-sface-bce"
    for f in ("metrics.json", "metrics.csv", "f1_curve.png", "confusion.png", "model.safetensors", "model.onnx",
              "test_features.npz", "manifest.json", "best.safetensors", "checkpoint.pt"):
        assert (run / f).is_file(), f
    m = read_manifest(run, "finetune")
    assert m["complete"] and len(m["classes"]) == 40
    assert m["student_run"]["path"] == str(student_run)
    assert m["student_run"]["config_hash"] == read_manifest(student_run, "distill")["config_hash"]
    split = read_json(m["split"]["path"])
    assert m["split"]["id"] and split["dataset"] == "orl" and len(split["train"]) == 80 and len(split["val"]) == 40
    assert "uint8" in m["onnx_input"]
    for png in ("f1_curve.png", "confusion.png"):
        with Image.open(run / png) as im:
            assert im.size[0] > 300 and im.size[1] > 200


def test_best_epoch_chosen_on_val_and_test_scored_once(smoke):
    _, run, metrics, _ = smoke
    assert metrics == read_json(run / "metrics.json")
    hist = metrics["history"]
    assert [r["epoch"] for r in hist] == [1, 2, 3, 4]
    # the best val macro-F1; among epochs tied on it, the lower val loss (not simply the earliest)
    best_f1 = max(r["val_f1_macro"] for r in hist)
    tied = [r for r in hist if r["val_f1_macro"] == best_f1]
    assert metrics["best_epoch"] == min(tied, key=lambda r: r["val_loss"])["epoch"]
    assert all(r["val_select"] == pytest.approx(r["val_f1_macro"] - 1e-4 * r["val_loss"]) for r in hist)
    assert "lower val loss" in metrics["selection"]
    best = hist[metrics["best_epoch"] - 1]
    for k in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "precision_micro", "recall_micro", "f1_micro"):
        assert metrics["val"][k] == best[f"val_{k}"]
        assert 0.0 <= metrics["test"][k] <= 1.0
    assert not any(k.startswith("test") for r in hist for k in r)  # test never scored per epoch
    assert hist[0]["lr"] == pytest.approx(1e-2) and hist[3]["lr"] == pytest.approx(1e-2 / math.sqrt(4))
    assert metrics["n_images"] == {"train": 80, "val": 40, "test": 280}
    # the test figures are those of the saved model on the test images
    model, classes = load_finetuned(run)
    z = np.load(run / "test_features.npz")
    assert len(classes) == 40 and z["features"].shape == (280, 128)
    with torch.no_grad():
        pred = model.classify(torch.from_numpy(z["features"])).argmax(1).numpy()
    assert np.array_equal(pred, z["pred"])
    assert classification_metrics(z["labels"], pred, labels=list(range(40))) == metrics["test"]


def test_model_card_and_onnx_parity(smoke):
    _, run, metrics, _ = smoke
    model, _ = load_finetuned(run)
    student_params = sum(p.numel() for p in build_student(read_manifest(run, "finetune")["student"]["config"], 128)
                         .parameters())
    assert metrics["params"] == sum(p.numel() for p in model.parameters()) == student_params + 128 * 40 + 40
    assert metrics["mflops"] > 100 and metrics["cpu_ms_per_img"] > 0
    onnx = metrics["onnx"]
    assert onnx["exported"] and onnx["ok"] and onnx["images"] == 4 and onnx["argmax_agreement"] == 1.0
    assert onnx["max_abs_diff"] < 1e-3
    import onnxruntime as ort

    sess = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    assert len(json.loads(meta["classes"])) == 40
    assert sess.get_inputs()[0].type == "tensor(uint8)"


def test_rerun_resumes_the_finished_run(smoke, student_run):
    root, run, metrics, _ = smoke
    again = finetune(compose(f"paths.root={root}", f"finetune.student_run={student_run}", "finetune.export_onnx=false",
                             "finetune.plots=false", "finetune.card_repeats=1"))
    assert again["history"] == metrics["history"] and again["test"] == metrics["test"]
    assert again["best_epoch"] == metrics["best_epoch"]
    with pytest.raises(ResumeError, match="another configuration.*finetune.train.resume=false"):
        finetune(compose(f"paths.root={root}", f"finetune.student_run={student_run}", "finetune.loss=ce",
                         "finetune.name=orl-resnet18-bce-sface-bce"))
    assert read_manifest(run, "finetune")["complete"]  # the finished run was left as it was


def test_model_file_is_checksummed_and_a_damaged_one_refused(smoke, tmp_path):
    import shutil

    from facekd.errors import ArtifactError
    from facekd.hashing import content_hash

    _, run, _, _ = smoke
    m = read_manifest(run, "finetune")
    assert {"model.safetensors", "model.onnx", "test_features.npz"} <= set(m["artifacts"])
    assert m["artifacts"]["model.safetensors"]["sha256"] == content_hash(run / "model.safetensors")
    distilled = read_manifest(m["student_run"]["path"], "distill")
    assert m["student_sha256"] == distilled["artifacts"][STUDENT_FILE]["sha256"]
    copy = tmp_path / "finetune" / run.name
    shutil.copytree(run, copy)
    path = copy / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-64:] = bytes(b ^ 0xFF for b in data[-64:])
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=rf"model\.safetensors is damaged: its sha256 .* written by the finetune "
                                            rf"stage; to write it again, rerun it: `python scripts/finetune.py "
                                            rf"paths.root={tmp_path} finetune.name={run.name} finetune.student_run="):
        load_finetuned(copy)


def cfg_overrides(root: Path, student_run: Path) -> list[str]:
    return [f"paths.root={root}", f"finetune.student_run={student_run}", "finetune.unfreeze=true",
            "finetune.augment=true", "finetune.export_onnx=false", "finetune.plots=false",
            "finetune.card_repeats=1", "finetune.train.epochs=1", "finetune.backbone_lr_scale=0.5"]


def test_unfrozen_backbone_with_augmentation_trains_the_student(smoke, student_run):
    root, *_ = smoke
    metrics = finetune(compose(*cfg_overrides(root, student_run)))
    run = Path(metrics["run_dir"])
    assert run.name == "orl-resnet18-bce-sface-bce-aug-unfrozen" and metrics["method"].endswith("(unfrozen)")
    model, _ = load_finetuned(run)
    from safetensors.torch import load_file

    before = load_file(str(student_run / STUDENT_FILE))
    after = model.student.state_dict()
    assert not torch.equal(before["backbone.conv1.weight"], after["backbone.conv1.weight"])
    # the augmented views follow the seed: a second run of the same seed trains the same weights, another seed not
    for seed, same in ((0, True), (1, False)):
        again = finetune(compose(*cfg_overrides(root, student_run), f"finetune.name=again-{seed}", f"seed={seed}"))
        weights = load_finetuned(Path(again["run_dir"]))[0].student.state_dict()["backbone.conv1.weight"]
        assert torch.equal(weights, after["backbone.conv1.weight"]) is same


# --------------------------------------------------------------------------------------------- unit level


class Identity3(torch.nn.Module):
    """Stands in for a student whose features are the input itself (for hand-checked head metrics)."""

    out_dim = feature_dim = 3

    def embed(self, x):
        return x


def test_val_metrics_checked_by_hand():
    """Head = identity, so the predictions are the argmax of the given features: [0, 1, 1, 2] vs labels [0, 1, 2, 2]."""
    model = SpecializedModel(Identity3(), 3, "embed", "none")
    with torch.no_grad():
        model.head.weight.copy_(torch.eye(3))
        model.head.bias.zero_()
    feats = torch.eye(3)[[0, 1, 1, 2]]
    labels = torch.tensor([0, 1, 2, 2])
    out = HeadTask(model, "bce", (feats, labels)).evaluate()
    # per class (precision, recall): class 0 (1, 1), class 1 (1/2, 1), class 2 (1, 1/2); F1 1, 2/3, 2/3
    assert out["val_accuracy"] == pytest.approx(3 / 4)
    assert out["val_precision_macro"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert out["val_recall_macro"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert out["val_f1_macro"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    for k in ("precision_micro", "recall_micro", "f1_micro"):
        assert out[f"val_{k}"] == pytest.approx(3 / 4)
    # one-hot BCE, mean over the 4 x 3 logits: softplus(z) - t z with z, t in {0, 1}
    sp1, sp0 = math.log1p(math.e), math.log(2)
    hit = (sp1 - 1) + 2 * sp0       # predicted class is the true one
    miss = sp0 + sp1 + (sp0 - 0)    # sample 2: logit 1 on class 1 (t 0), logit 0 on class 2 (t 1)
    assert out["val_loss"] == pytest.approx((3 * hit + miss) / 12)
    assert "val_select" not in out
    sel = HeadTask(model, "bce", (feats, labels), select_on="val_f1_macro").evaluate()
    assert sel["val_select"] == pytest.approx(sel["val_f1_macro"] - 1e-4 * sel["val_loss"])
    ce = HeadTask(model, "ce", (feats, labels)).evaluate()["val_loss"]
    lse = math.log(math.e + 2)
    assert ce == pytest.approx((3 * (lse - 1) + lse) / 4)


def test_frozen_student_on_images_never_changes(orl, tmp_path):
    """Image inputs with a frozen student: weights and batch-norm statistics stay as they were."""
    torch.manual_seed(0)
    student = build_student({"name": "resnet18", "input_size": 32}, 16)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    from facekd.data.datasets import load_images

    imgs = torch.from_numpy(load_images(orl.root, orl.paths[:8], 32)).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    model = SpecializedModel(student, 4, "backbone", "standardize")
    task = HeadTask(model, "ce", (imgs, labels), inputs="images")
    cfg = TrainConfig(epochs=2, batch_size=4, optim={"name": "adam", "lr": 1e-2}, monitor="val_accuracy",
                      mode="max", progress=False, device="cpu")
    head_before = model.head.weight.detach().clone()
    Trainer(cfg, tmp_path).fit(task, torch.utils.data.TensorDataset(imgs, labels))
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())
    assert not torch.equal(head_before, model.head.weight)
    assert set(task.state_dict()) == {"head.weight", "head.bias", "norm.mean", "norm.std"}


def test_settings_refusals():
    with pytest.raises(ValueError, match="unknown finetune keys"):
        FinetuneSettings.from_config({"student_run": "x", "lr": 1})
    with pytest.raises(ValueError, match="finetune.loss"):
        FinetuneSettings.from_config({"student_run": "x", "loss": "hinge"})
    with pytest.raises(ValueError, match="val metric"):
        FinetuneSettings.from_config({"student_run": "x", "monitor": "test_accuracy"})
    with pytest.raises(ValueError, match="finetune.ties"):
        FinetuneSettings.from_config({"student_run": "x", "ties": "latest"})
    # what the engine selects on: ties broken by val loss for a score, the loss itself for a loss
    assert FinetuneSettings.from_config({"student_run": "x"}).select_key == "val_select"
    assert FinetuneSettings.from_config({"student_run": "x", "ties": "earliest"}).select_key == "val_f1_macro"
    assert FinetuneSettings.from_config({"student_run": "x", "monitor": "val_loss"}).select_key == "val_loss"


# ---------------------------------------------------------------------------------------------- refusals


def test_refuses_a_missing_incomplete_or_other_teacher_student_run(tmp_path, student_run):
    with pytest.raises(RunError, match="does not exist"):
        finetune(compose(f"paths.root={tmp_path}", f"finetune.student_run={tmp_path / 'nope'}"))
    unfinished = write_student_run(tmp_path / "unfinished", complete=False)
    with pytest.raises(RunError, match="incomplete"):
        finetune(compose(f"paths.root={tmp_path}", f"finetune.student_run={unfinished}"))
    with pytest.raises(RunError, match="another teacher.*name: 'sface' != 'vggface2_resnet50'"):
        finetune(compose(f"paths.root={tmp_path}", f"finetune.student_run={student_run}",
                         "finetune.expected_teacher={name: vggface2_resnet50}"))
    assert not (tmp_path / "finetune").exists()  # refused before any run folder is made


def _tampered_root(smoke, tmp_path, edit) -> Path:
    """A fresh runs root holding the smoke run's split manifest, edited by ``edit(split_dict)``."""
    _, run, _, _ = smoke
    src = Path(read_manifest(run, "finetune")["split"]["path"])
    split = read_json(src)
    edit(split)
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / src.name).write_text(json.dumps(split))
    return tmp_path


def test_refuses_a_split_manifest_that_does_not_match_the_data(smoke, tmp_path, student_run):
    def rename(split):
        split["test"][0][0] = "s1/does_not_exist.pgm"

    root = _tampered_root(smoke, tmp_path, rename)
    with pytest.raises(FaceDataError, match="not in the data folder"):
        finetune(compose(f"paths.root={root}", f"finetune.student_run={student_run}"))


def test_refuses_a_class_in_test_absent_from_train(smoke, tmp_path, student_run):
    def drop_class(split):
        split["train"] = [e for e in split["train"] if e[1] != 3]

    root = _tampered_root(smoke, tmp_path, drop_class)
    with pytest.raises(FaceDataError, match="absent from train"):
        finetune(compose(f"paths.root={root}", f"finetune.student_run={student_run}"))


def test_refuses_a_student_distilled_on_another_splits_train_images(tmp_path):
    run = write_student_run(tmp_path / "other-split", split_id="0123456789abcdef")
    with pytest.raises(RunError, match="distilled on the training images of split 0123456789abcdef"):
        finetune(compose(f"paths.root={tmp_path}", f"finetune.student_run={run}"))


def test_any_face_folder_via_the_pins_config(orl, tmp_path):
    """``data=pins data.root=DIR``: a folder with one sub-folder per person (here 4 ORL people, 6 photos each)."""
    import shutil

    folder = tmp_path / "people"
    for person in ("s1", "s2", "s3", "s4"):
        (folder / person).mkdir(parents=True)
        for i in range(1, 7):
            shutil.copy(orl.root / person / f"{i}.pgm", folder / person / f"{i}.pgm")
    student_run = write_student_run(tmp_path / "student")
    metrics = finetune(compose(f"paths.root={tmp_path / 'runs'}", f"finetune.student_run={student_run}", "data=pins",
                               f"data.root={folder}", "data.per_class=3", "data.val=1", "data.test=2",
                               "finetune.export_onnx=false", "finetune.plots=false", "finetune.card_repeats=1"))
    assert Path(metrics["run_dir"]).name == "pins-student-bce"  # <data>-<student run folder>-<loss>
    assert metrics["n_images"] == {"train": 12, "val": 4, "test": 8} and metrics["num_classes"] == 4
    assert read_manifest(metrics["run_dir"], "finetune")["image_size"] == 224


def test_cosface_loss_by_hand_and_its_cosine_head():
    """CosFace: cross-entropy on scale x cosine with the margin taken off the target's cosine; the head's scores
    depend only on the features' direction."""
    import torch.nn.functional as F

    from facekd.finetune.task import COSFACE_MARGIN, classification_loss, head_for
    from facekd.models import CosineHead

    head = CosineHead(4, 3, scale=16.0)
    x = torch.randn(5, 4)
    logits = head(x)
    torch.testing.assert_close(logits, head(3.0 * x))  # scale-free in the features
    assert logits.abs().max() <= 16.0 + 1e-4
    y = torch.tensor([0, 1, 2, 0, 1])
    want = F.cross_entropy(logits - 16.0 * COSFACE_MARGIN * F.one_hot(y, 3), y)
    torch.testing.assert_close(classification_loss("cosface", logits, y, 16.0), want)
    assert classification_loss("cosface", logits, y) > classification_loss("ce", logits, y)  # the margin costs
    assert head_for("cosface") == "cosine" and head_for("ce") == "linear"


def test_int8_copies_are_calibrated_on_synthetic_faces_and_checked_on_val(student_run, tmp_path, caplog):
    import onnxruntime as ort

    from facekd.errors import ArtifactError

    root = tmp_path / "int8"
    m = finetune(compose(f"paths.root={root}", f"finetune.student_run={student_run}", "finetune.plots=false",
                         "finetune.int8.enabled=true", "finetune.int8.faces=16", "finetune.int8.min_cosine=0.9",
                         "finetune.int8.min_agreement=0.5"))
    run = Path(m["run_dir"])
    for fp32, int8 in (("model.onnx", "model.int8.onnx"), ("embedder.onnx", "embedder.int8.onnx")):
        info = m["int8"][fp32]
        assert info["shipped"] and info["file"] == int8 and info["calibration_faces"] == 16
        assert info["val_images"] == m["n_images"]["val"] and 0.9 <= info["val_min_cosine"] <= 1.0
        assert (run / int8).stat().st_size < (run / fp32).stat().st_size
        sess = ort.InferenceSession(str(run / int8), providers=["CPUExecutionProvider"])
        assert sess.get_inputs()[0].type == "tensor(uint8)"
    assert set(m["int8"]["model.onnx"]["test_accuracy"]) == {"fp32", "int8"}
    assert set(m["deployed"]) == {"model.onnx", "model.int8.onnx", "embedder.onnx", "embedder.int8.onnx"}
    assert all(c["onnx_ms_per_img"] > 0 and c["file_mb"] > 0 for c in m["deployed"].values())
    artifacts = read_manifest(run, "finetune")["artifacts"]
    assert {"model.int8.onnx", "embedder.int8.onnx"} <= set(artifacts)
    from facekd.embedder import load_embedder

    e8, e32 = load_embedder(run, precision="int8"), load_embedder(run)
    assert (e8.sha256, e32.sha256) == (artifacts["embedder.int8.onnx"]["sha256"], artifacts["embedder.onnx"]["sha256"])
    assert load_embedder(run, sha256=e8.sha256).sha256 == e8.sha256  # a gallery's embedder is found by its bytes
    crops = np.random.default_rng(0).integers(0, 256, (3, e8.image_size, e8.image_size, 3), dtype=np.uint8)
    z8, z32 = e8.embed(crops), e32.embed(crops)
    assert np.allclose(np.linalg.norm(z8, axis=1), 1.0, atol=1e-4) and (z8 * z32).sum(1).min() > 0.9

    # a copy below the bound is refused and not written; the fp32 files stay
    m = finetune(compose(f"paths.root={tmp_path / 'strict'}", f"finetune.student_run={student_run}",
                         "finetune.plots=false", "finetune.int8.enabled=true", "finetune.int8.faces=16",
                         "finetune.int8.min_cosine=1.0"))
    run = Path(m["run_dir"])
    refused = [i for i in m["int8"].values() if not i["shipped"]]
    assert refused and all("refused, not shipped" in i["refused"] and "finetune.int8.min_cosine=1.0" in i["refused"]
                           for i in refused)
    assert all(not (run / f).exists() for f in ("model.int8.onnx", "embedder.int8.onnx")
               if not m["int8"][f.replace(".int8", "")]["shipped"])
    assert (run / "model.onnx").is_file() and (run / "embedder.onnx").is_file()
    if not m["int8"]["embedder.onnx"]["shipped"]:
        from facekd.embedder import load_embedder

        with pytest.raises(RunError, match="holds no embedder.int8.onnx.*finetune.int8.enabled=true"):
            load_embedder(run, precision="int8")

    # no synthetic faces to calibrate on: refused before any training
    bare = write_student_run(tmp_path / "distill" / "bare")
    with pytest.raises(ArtifactError, match="names no generate run.*finetune.int8.enabled=false"):
        finetune(compose(f"paths.root={tmp_path / 'bare'}", f"finetune.student_run={bare}",
                         "finetune.int8.enabled=true"))
    assert not (tmp_path / "bare" / "finetune").exists()


def test_int8_settings_refusals():
    from facekd.errors import ConfigError

    base = {"student_run": "x"}
    with pytest.raises(ConfigError, match="finetune.export_onnx=false"):
        FinetuneSettings.from_config({**base, "export_onnx": False, "int8": {"enabled": True}})
    with pytest.raises(ConfigError, match="unknown finetune.int8 key"):
        FinetuneSettings.from_config({**base, "int8": {"enable": True}})
    with pytest.raises(ConfigError, match=r"finetune.int8.min_cosine must lie in \[0, 1\]"):
        FinetuneSettings.from_config({**base, "int8": {"min_cosine": 2}})
    assert FinetuneSettings.from_config(base).int8 == {"enabled": False, "faces": 256, "min_cosine": 0.98,
                                                        "min_agreement": 0.95}


def test_hold_term_by_hand():
    from facekd.distill.losses import build_loss
    from facekd.finetune.hold import HoldTerm

    class Doubler(torch.nn.Module):
        def embed(self, x):
            return 2 * x

    faces = torch.arange(12, dtype=torch.float32).reshape(6, 2)
    targets = torch.zeros(6, 2)
    term = HoldTerm(faces, targets, build_loss("mse"), weight=0.5, batch_size=3, seed=0)
    idx = torch.randint(6, (3,), generator=torch.Generator().manual_seed(0))
    got = term(Doubler(), lambda x: x + 1, torch.device("cpu"))
    assert torch.allclose(got, 0.5 * ((2 * (faces[idx] + 1)) ** 2).mean())


def test_hold_settings_refusals_and_hash():
    from facekd.errors import ConfigError

    base = {"student_run": "x"}
    with pytest.raises(ConfigError, match="finetune.unfreeze=false"):
        FinetuneSettings.from_config({**base, "hold": {"weight": 1.0}})
    with pytest.raises(ConfigError, match="unknown finetune.hold key"):
        FinetuneSettings.from_config({**base, "unfreeze": True, "augment": True, "hold": {"wieght": 1.0}})
    with pytest.raises(ConfigError, match="finetune.hold.weight must be >= 0"):
        FinetuneSettings.from_config({**base, "unfreeze": True, "augment": True, "hold": {"weight": -1}})
    off = FinetuneSettings.from_config({**base, "unfreeze": True, "augment": True})
    on = FinetuneSettings.from_config({**base, "unfreeze": True, "augment": True, "hold": {"weight": 0.5}})
    assert off.hashed()["hold"] == {"weight": 0.0, "faces": 1000, "batch_size": 32}  # hashed whatever its value
    assert on.hashed()["hold"] == {"weight": 0.5, "faces": 1000, "batch_size": 32}


def test_hold_term_trains_the_unfrozen_student_towards_the_teacher(smoke, student_run):
    root, *_ = smoke
    args = (*cfg_overrides(root, student_run), "finetune.hold.faces=16", "finetune.hold.batch_size=4")
    held = finetune(compose(*args, "finetune.hold.weight=1.0", "finetune.name=held"))
    plain = finetune(compose(*args, "finetune.name=plain"))
    rows = (Path(held["run_dir"]) / "metrics.csv").read_text().splitlines()
    assert "train_hold" in rows[0].split(",") and "train_hold" not in (Path(plain["run_dir"]) / "metrics.csv").read_text()
    a = load_finetuned(Path(held["run_dir"]))[0].student.state_dict()["backbone.conv1.weight"]
    b = load_finetuned(Path(plain["run_dir"]))[0].student.state_dict()["backbone.conv1.weight"]
    assert not torch.equal(a, b)  # the term changed what the student learned
