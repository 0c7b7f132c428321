import numpy as np

from facekd.probe import few_shot_probe


def test_few_shot_probe_known_features(orl):
    rng = np.random.default_rng(0)
    labels = np.array(orl.labels)
    identity = np.eye(len(orl.classes))[labels] + 0.01 * rng.standard_normal((len(labels), len(orl.classes)))
    perfect = few_shot_probe(identity, orl, per_class=2, seed=0)
    assert perfect["ncm"] == 1.0 and perfect["logreg"] == 1.0
    assert (perfect["n_train"], perfect["n_test"]) == (80, 320)
    noise = few_shot_probe(rng.standard_normal((len(labels), 32)), orl, per_class=2, seed=0)
    assert noise["ncm"] < 0.15 and noise["logreg"] < 0.15  # chance is 1/40
