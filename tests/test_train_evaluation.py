"""train/evaluation.py: the validation loss is the negative log-likelihood of the labels under the model's answer,
whether that answer is logits, probabilities (combine=probs) or log-probabilities (mixture, topk_combine=equal),
as the kind of the model's `output` says (models/output.py)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from multiglance.data import Split
from multiglance.models import GlanceOutput, create_model
from multiglance.train.evaluation import evaluate

# (combine, inference mode, k, topk_combine) -> the kind of the answer the eval forward returns
CASES = [
    ("logits", "hard", 1, "weights", "logits"),
    ("probs", "hard", 1, "weights", "logits"),  # one patch: glance 2's logits, whatever the combination
    ("logits", "soft", None, "weights", "logits"),
    ("probs", "soft", None, "weights", "probs"),
    ("probs", "hard", 3, "weights", "probs"),
    ("probs", "hard", 3, "equal", "log_probs"),
    ("mixture", "soft", None, "weights", "log_probs"),
    ("mixture", "hard", 3, "weights", "log_probs"),
]


def _split(n: int = 24, classes: int = 10) -> Split:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, classes, (n,), generator=g)
    return Split(images, labels, [str(i) for i in range(classes)])


@pytest.mark.parametrize("combine, mode, k, rule, kind", CASES)
def test_validation_loss_is_the_nll_of_the_answer(combine, mode, k, rule, kind):
    torch.manual_seed(0)
    model = create_model("paper-cifar10-two-s2", combine=combine, topk_combine=rule).eval()
    split = _split()
    with torch.no_grad():
        answer = model.output(split.images, mode, k)  # as evaluate calls it
        out = model(split.images, mode=mode, k=k)  # (N, K), the eval forward
    assert answer.kind == kind and torch.equal(answer.answer, out)
    p = {"logits": out.softmax(-1), "probs": out, "log_probs": out.exp()}[kind]  # (N, K)
    assert torch.allclose(p.sum(-1), torch.ones(len(split)), atol=1e-5)  # the kind is what the model returns
    expected = -p[torch.arange(len(split)), split.labels].log().mean().item()
    got = evaluate(model, split, mode=mode, k=k, batch_size=len(split))
    assert got["loss"] == pytest.approx(expected, rel=1e-5)
    if kind == "probs":  # the bug: cross-entropy of probabilities as if they were logits is another number
        assert abs(F.cross_entropy(out, split.labels).item() - expected) > 0.01


def test_one_glance_answers_logits_and_the_default_mode_is_the_models():
    x = torch.rand(2, 3, 32, 32)
    one = create_model("paper-cifar10-one-s2").eval()
    two = create_model("paper-cifar10-two-s2", combine="probs", inference="soft").eval()
    assert one.output(x).kind == "logits" and two.output(x).kind == "probs" and two.output(x, "hard").kind == "logits"
    assert create_model("paper-cifar10-two-s2", combine="probs", top_k=2).eval().output(x).kind == "probs"


@pytest.mark.parametrize("kind, answer", [("logits", [[2.0, 0.0]]), ("probs", [[0.25, 0.75]]),
                                          ("log_probs", [[-1.3862944, -0.2876821]])])
def test_probabilities_and_log_probabilities_of_each_kind(kind, answer):
    out = GlanceOutput(torch.tensor(answer), kind)
    torch.testing.assert_close(out.probs().sum(-1), torch.ones(1))
    torch.testing.assert_close(out.log_probs(), out.probs().log())
    with pytest.raises(ValueError, match="kind"):
        GlanceOutput(out.answer, "logit")


def test_a_probability_of_zero_is_a_large_finite_loss():
    torch.manual_seed(0)
    model = create_model("paper-cifar10-two-s2", combine="probs", inference="soft").eval()
    split = _split(4)
    real = model.output

    def certain_and_wrong(x, mode=None, k=None):  # all mass on a class that is not the label
        out = real(x, mode, k)
        return GlanceOutput(F.one_hot((split.labels + 1) % 10, 10).float(), out.kind)

    model.output = certain_and_wrong
    loss = evaluate(model, split, batch_size=4)["loss"]
    assert loss == pytest.approx(-torch.tensor(1e-12).log().item(), rel=1e-4)
