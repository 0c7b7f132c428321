"""Named taps: forward hooks by module path return the right shapes on every network, and bad paths are named."""
import pytest
import torch

from facekd.models import build_student, teacher_architecture
import logging

from facekd.models.taps import TAP_SETS, FeatureTaps, TapError, register_tap_sets, tap_set, tap_shapes

TEACHER_SHAPES = {
    "sface": (112, {"net.body.conv_4": (128, 56, 56), "net.body.conv_6": (256, 28, 28),
                    "net.body.conv_12": (512, 14, 14), "net.bn1": (1024, 7, 7), "net.fc1": (128,)}),
    "vggface2_resnet50": (224, {"net.layer1": (256, 56, 56), "net.layer2": (512, 28, 28),
                                "net.layer3": (1024, 14, 14), "net.layer4": (2048, 7, 7), "net.avgpool": (2048, 1, 1)}),
    "facenet_vggface2": (160, {"net.repeat_1": (256, 17, 17), "net.repeat_2": (896, 8, 8),
                               "net.repeat_3": (1792, 3, 3), "net.block8": (1792, 3, 3), "net.last_bn": (512,)}),
}


@pytest.mark.parametrize("name", sorted(TEACHER_SHAPES))
def test_teacher_tap_sets_have_the_expected_shapes(name):
    size, expected = TEACHER_SHAPES[name]
    teacher = teacher_architecture({"name": name})
    paths = sorted({p for s in TAP_SETS[name].values() for p in s})
    assert tap_shapes(teacher, paths, size) == {p: expected[p] for p in paths}


@pytest.mark.parametrize("name,size,expected", [
    ("resnet18", 64, {"backbone.layer1": (64, 16, 16), "backbone.layer2": (128, 8, 8), "backbone.layer3": (256, 4, 4),
                      "backbone.layer4": (512, 2, 2), "proj": (40,)}),
    ("resnet18", 112, {"backbone.layer1": (64, 28, 28), "backbone.layer4": (512, 4, 4)}),
    ("convnet9", 224, {"body.2": (32, 224, 224), "body.12": (256, 14, 14), "body.22": (1024, 2, 2),
                       "body.29": (2048, 1, 1), "proj": (40,)}),
    ("mobilefacenet", 64, {"stage1": (64, 16, 16), "stage2": (128, 8, 8), "stage3": (128, 4, 4),
                           "conv_sep": (512, 4, 4), "proj": (40,)}),
    ("mobilefacenet", 112, {"stage1": (64, 28, 28), "stage3": (128, 7, 7), "conv_sep": (512, 7, 7)}),
])
def test_student_tap_shapes(name, size, expected):
    student = build_student({"name": name, "input_size": size}, 40)
    assert tap_shapes(student, list(expected), size) == expected


def test_taps_capture_outputs_without_changing_them_and_hooks_are_removed():
    student = build_student({"name": "resnet18", "input_size": 64}, 8).eval()
    x = torch.randn(3, 3, 64, 64)
    with FeatureTaps(student, ["backbone.layer4", "proj"]) as taps:
        out = student(x)
        got = taps.collect()
    assert torch.equal(got["proj"], out)
    # layer4 pooled and projected is the output: the tap holds the real intermediate map
    assert torch.allclose(student.proj(got["backbone.layer4"].mean((2, 3))), out, atol=1e-5)
    assert all(not m._forward_hooks for m in student.modules())


def test_unknown_tap_lists_the_paths_that_exist():
    student = build_student({"name": "resnet18", "input_size": 64}, 8)
    with pytest.raises(TapError) as e:
        FeatureTaps(student, ["backbone.layer9"], key="kd.student_taps")
    msg = str(e.value)
    assert "kd.student_taps='backbone.layer9'" in msg and "backbone.layer1" in msg


def test_tap_set_names_and_errors():
    assert tap_set("resnet18", "top") == ["backbone.layer4"]
    assert tap_set("resnet18", ["a.b"]) == ["a.b"]
    with pytest.raises(TapError, match="kd.teacher_taps='deep'.*stages, top, embedding"):
        tap_set("sface", "deep", "kd.teacher_taps")
    with pytest.raises(TapError, match="network 'nonet' has no tap set"):
        tap_set("nonet", "stages")


def test_old_tap_set_name_skd_resolves_to_stages_with_one_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="facekd.models.taps"):
        got = tap_set("resnet18", "skd", "distill.taps.student")
    assert got == tap_set("resnet18", "stages") == ["backbone.layer1", "backbone.layer2", "backbone.layer3",
                                                    "backbone.layer4"]
    assert [r.getMessage() for r in caplog.records] == ["tap set 'skd' is now called 'stages'"]


def test_each_network_module_brings_its_tap_sets():
    from facekd.models import STUDENTS, TEACHERS
    from facekd.models.students import convnet9
    from facekd.models.teachers import facenet

    assert set(TAP_SETS) == set(STUDENTS.names()) | set(TEACHERS.names())
    assert tap_set("convnet9", "stages") == list(convnet9.TAP_SETS["stages"]) == ["body.2", "body.12", "body.22",
                                                                                 "body.29"]
    assert TAP_SETS["facenet_casia"] == TAP_SETS["facenet_vggface2"] == facenet.TAP_SETS
    assert tap_set("facenet_casia", "top") == ["net.block8"]


def test_a_new_network_registers_its_tap_sets_in_its_own_module():
    from facekd.models import taps

    try:
        sets = register_tap_sets("test_only_net", {"stages": ["a", "b"], "top": ["b"]})
        assert tap_set("test_only_net", "stages") == ["a", "b"] and dict(TAP_SETS["test_only_net"]) == dict(sets)
        register_tap_sets("test_only_net", {"stages": ["a", "b"], "top": ["b"]})  # re-import: same sets, accepted
        with pytest.raises(ValueError, match="registered twice"):
            register_tap_sets("test_only_net", {"stages": ["c"]})
    finally:
        taps._SETS.pop("test_only_net", None)
