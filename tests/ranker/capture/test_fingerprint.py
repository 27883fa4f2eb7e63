"""The one fingerprint rule: what differs, in words, and a refusal naming both sides."""

from dataclasses import replace

import pytest

from ranker.capture.fingerprint import FeatureFingerprint, ModelFingerprint

MODEL = ModelFingerprint("tiny-llm", "a" * 64, num_layers=4, hidden_size=32)


def test_mismatches_name_each_difference():
    assert MODEL.mismatches(MODEL) == [] and MODEL.matches(replace(MODEL))
    other = ModelFingerprint("other-llm", "b" * 64, num_layers=6, hidden_size=16)
    assert MODEL.mismatches(other) == [
        "it was trained on tiny-llm (revision aaaaaaaaaaaa), but the loaded model is other-llm (revision bbbbbbbbbbbb)",
        "hidden size 32 != loaded model's 16", "4 layers != loaded model's 6"]
    assert not MODEL.matches(replace(MODEL, revision="c" * 64))
    features = FeatureFingerprint(MODEL, layer=2)
    assert features.mismatches(FeatureFingerprint(MODEL, layer=3)) == ["it reads layer 2, but features were captured at layer 3"]


def test_check_compatible_refuses_naming_both():
    with pytest.raises(ValueError, match=r"RM at x needs the base model tiny-llm \(revision a{12}, 4 layers, hidden size 32\), "
                                         r"but the loaded base model is other"):
        MODEL.check_compatible(replace(MODEL, model_id="other"), what="RM at x")
    MODEL.check_compatible(replace(MODEL), what="RM at x")
    with pytest.raises(ValueError, match="This ranker at r does not match the base model's features: it reads layer 2"):
        FeatureFingerprint(MODEL, 2).check_compatible(FeatureFingerprint(MODEL, 1), what="ranker at r")
    with pytest.raises(ValueError, match="ranker at r records no feature fingerprint.*tiny-llm layer 1"):
        FeatureFingerprint.check_recorded(None, FeatureFingerprint(MODEL, 1), what="ranker at r")
    FeatureFingerprint.check_recorded(FeatureFingerprint(MODEL, 1), FeatureFingerprint(MODEL, 1), what="ranker at r")
