import numpy as np
import pytest

from facekd.data.faces import FaceDataError, FaceSet
from facekd.data.splits import Split, SplitProtocol, load_or_make_split, make_split
from facekd.errors import ConfigError


def _fake_set(counts):
    paths, labels = [], []
    for y, n in enumerate(counts):
        paths += [f"c{y}/{i}.png" for i in range(n)]
        labels += [y] * n
    return FaceSet(root="/nowhere", paths=paths, labels=labels, classes=[f"c{y}" for y in range(len(counts))],
                   name="fake")


def test_orl_few_shot_split_is_deterministic_and_disjoint(orl):
    a = make_split(orl, SplitProtocol(per_class=2, val=1, seed=0))
    b = make_split(orl, SplitProtocol(per_class=2, val=1, seed=0))
    c = make_split(orl, SplitProtocol(per_class=2, val=1, seed=1))
    assert (len(a.train), len(a.val), len(a.test)) == (80, 40, 280)
    assert a.train == b.train and a.val == b.val and a.test == b.test
    assert a.train != c.train
    parts = [set(p for p, _ in a.part(k)) for k in ("train", "val", "test")]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert sum(map(len, parts)) == 400
    for k in ("train", "val", "test"):  # every identity in every part, with its own label
        assert {y for _, y in a.part(k)} == set(range(40))
    assert all(a.classes[y] == p.split("/")[0] for p, y in a.train)


def test_per_class_subsample_and_capped_test():
    s = make_split(_fake_set([40, 50, 34]), SplitProtocol(per_class=32, val=1, test=None, seed=3))
    assert [sum(1 for _, y in s.train if y == k) for k in range(3)] == [32, 32, 32]
    assert [sum(1 for _, y in s.test if y == k) for k in range(3)] == [7, 17, 1]
    s = make_split(_fake_set([40, 50]), SplitProtocol(per_class=5, val=2, test=3))
    assert (len(s.train), len(s.val), len(s.test)) == (10, 4, 6)


def test_too_few_images_error_or_drop():
    faces = _fake_set([10, 3, 10])
    with pytest.raises(FaceDataError, match=r"c1 \(3\)"):
        make_split(faces, SplitProtocol(per_class=3, val=1, too_few="error"))
    s = make_split(faces, SplitProtocol(per_class=3, val=1, too_few="drop"))
    assert s.dropped == ["c1"] and s.classes == ["c0", "c2"] and {y for _, y in s.train} == {0, 1}


@pytest.mark.parametrize("kw", [dict(per_class=0), dict(per_class=-2), dict(val=-1), dict(test=0),
                                dict(too_few="maybe"), dict(per_class=2.5), dict(per_class=True), dict(val="1"),
                                dict(test=False), dict(seed=1.0), dict(seed=-1)])
def test_nonsense_protocol_values(kw):
    (field,) = kw
    with pytest.raises(ConfigError, match=f"^data.{'split_seed' if field == 'seed' else field} must be "):
        SplitProtocol(**kw)


def test_per_class_true_is_not_one():
    with pytest.raises(ConfigError) as e:
        SplitProtocol(per_class=True)
    assert str(e.value) == ("data.per_class must be an integer >= 1 (training images per identity), got true "
                            "(a boolean); set it like data.per_class=1")


def test_numpy_integers_become_plain_ints():
    p = SplitProtocol(per_class=np.int64(3), val=np.int32(1), test=None, seed=np.int64(4))
    assert p == SplitProtocol(per_class=3, val=1, seed=4) and type(p.per_class) is int and type(p.seed) is int


def test_manifest_roundtrip_and_mismatch(orl, tmp_path):
    split, path = load_or_make_split(orl, SplitProtocol(), tmp_path)
    again, path2 = load_or_make_split(orl, SplitProtocol(), tmp_path)
    assert path == path2 and Split.read(path).train == split.train == again.train
    other = _fake_set([10] * 40)
    with pytest.raises(FaceDataError, match="not in the data folder"):
        split.check_matches(other)
    bad = Split.read(path)
    bad.train = [t for t in bad.train if t[1] != 5]
    with pytest.raises(FaceDataError, match="absent from train"):
        bad.check_matches(orl)


# ------------------------------------------------------------------------------------------------- open set


def test_open_set_split_withholds_disjoint_unknown_identities(orl, tmp_path):
    a = make_split(orl, SplitProtocol(per_class=2, val=1, seed=0, unknown_identities=5))
    b = make_split(orl, SplitProtocol(per_class=2, val=1, seed=0, unknown_identities=5))
    c = make_split(orl, SplitProtocol(per_class=2, val=1, seed=1, unknown_identities=5))
    assert a.open_set and a.parts == ("train", "val", "test", "unknown_val", "unknown_test")
    assert len(a.classes) == 30 and len(a.unknown_classes) == 10
    assert (len(a.train), len(a.val), len(a.test), len(a.unknown_val), len(a.unknown_test)) == (60, 30, 210, 50, 50)
    calibration = {a.unknown_classes[y] for _, y in a.unknown_val}
    tested = {a.unknown_classes[y] for _, y in a.unknown_test}
    assert len(calibration) == len(tested) == 5 and not calibration & tested
    assert not (calibration | tested) & set(a.classes)  # never train/val/test identities
    for part in ("unknown_val", "unknown_test"):  # every image of an unknown identity, labelled by its own name
        assert all(a.unknown_classes[y] == p.split("/")[0] for p, y in a.part(part))
    assert (a.unknown_classes, a.unknown_val, a.train) == (b.unknown_classes, b.unknown_val, b.train)
    assert a.id == b.id and a.unknown_classes != c.unknown_classes and a.id != c.id
    split, path = load_or_make_split(orl, SplitProtocol(unknown_identities=5), tmp_path)
    again = Split.read(path)
    assert again.unknown_test == split.unknown_test and again.id == split.id
    again.check_matches(orl)


def test_a_closed_set_split_records_every_protocol_key(orl, tmp_path):
    closed = SplitProtocol(per_class=2, val=1, seed=0, unknown_identities=0)
    assert closed.as_dict() == {"per_class": 2, "val": 1, "test": None, "seed": 0, "too_few": "error",
                                "unknown_identities": 0, "enroll_identities": 0, "enroll_shots": 2,
                                "stranger_identities": 0}
    s = make_split(orl, closed)
    assert not s.open_set and not s.enroll_protocol and s.parts == ("train", "val", "test")
    _, path = load_or_make_split(orl, closed, tmp_path)
    again = Split.read(path)
    assert again.id == s.id and again.unknown_test == [] and again.strangers == []


def test_too_many_unknown_identities_refused_naming_the_key(orl):
    with pytest.raises(ConfigError, match=r"data.unknown_identities=20 withholds 40 identities .* fewer than 2 known "
                                          r"identities .* at most 19"):
        make_split(orl, SplitProtocol(unknown_identities=20))
    make_split(orl, SplitProtocol(unknown_identities=19))  # 2 known identities remain
    with pytest.raises(ConfigError, match="^data.unknown_identities must be an integer >= 0"):
        SplitProtocol(unknown_identities=-1)
    with pytest.raises(ConfigError, match="^data.unknown_identities must be"):
        SplitProtocol(unknown_identities=True)


def test_enroll_protocol_has_three_disjoint_kinds_of_people(orl, tmp_path):
    p = SplitProtocol(per_class=2, val=1, seed=0, enroll_identities=10, enroll_shots=2, stranger_identities=10)
    a, b, c = make_split(orl, p), make_split(orl, p), make_split(orl, SplitProtocol(
        per_class=2, val=1, seed=1, enroll_identities=10, enroll_shots=2, stranger_identities=10))
    assert a.enroll_protocol and not a.open_set
    assert a.parts == ("train", "val", "test", "enroll", "enroll_query", "strangers")
    assert (len(a.classes), len(a.enroll_classes), len(a.stranger_classes)) == (20, 10, 10)
    assert (len(a.train), len(a.val), len(a.test)) == (40, 20, 140)
    assert (len(a.enroll), len(a.enroll_query), len(a.strangers)) == (20, 80, 100)
    roles = [set(a.classes), set(a.enroll_classes), set(a.stranger_classes)]
    assert not (roles[0] & roles[1]) and not (roles[0] & roles[2]) and not (roles[1] & roles[2])
    files = [set(p for p, _ in a.part(k)) for k in a.parts]
    assert sum(map(len, files)) == 400 == len(set().union(*files))  # every photo in exactly one part
    for part, names in (("enroll", a.enroll_classes), ("enroll_query", a.enroll_classes),
                        ("strangers", a.stranger_classes)):  # labels index their own class lists
        assert all(names[y] == p.split("/")[0] for p, y in a.part(part))
    assert a.id == b.id and a.enroll == b.enroll and a.id != c.id
    split, path = load_or_make_split(orl, p, tmp_path)
    again = Split.read(path)
    assert again.strangers == split.strangers and again.id == split.id
    again.check_matches(orl)
    closed = make_split(orl, SplitProtocol(per_class=2, val=1, seed=0))
    assert not closed.enroll_protocol and closed.as_dict()["enroll"] == [] and "enroll" not in closed.parts


def test_enroll_protocol_refusals(orl):
    with pytest.raises(ConfigError, match="fewer than 2 would remain"):
        make_split(orl, SplitProtocol(enroll_identities=20, stranger_identities=19))
    with pytest.raises(ConfigError, match="use one of them"):
        make_split(orl, SplitProtocol(enroll_identities=5, unknown_identities=5))
    with pytest.raises(FaceDataError, match="enroll_shots=10"):
        make_split(orl, SplitProtocol(enroll_identities=5, enroll_shots=10))
    with pytest.raises(ConfigError, match="^data.enroll_shots must be an integer >= 1"):
        SplitProtocol(enroll_identities=5, enroll_shots=0)
