"""bench/photos.py: the pipeline end to end on a tiny generated folder, where glance 1 looks against known boxes,
and the RESULTS section built from the JSON files."""
from __future__ import annotations

import json

import torch

from multiglance.bench.photos import build_section, row_name, sign_hits
from multiglance.cli import main
from multiglance.config import ModelConfig
from multiglance.models import build_model


def test_quick_shapes_part_writes_a_complete_record(tmp_path, capsys):
    assert main(["bench", "photos", "--quick", "--parts", "shapes", "--runs-dir", str(tmp_path), "--quiet"]) in (0, None)
    record = json.loads((tmp_path / "photos-shapes-large-two-s0.json").read_text())
    assert record["part"] == "shapes" and record["preset"] == "large-two" and record["selection"] == "val"
    assert record["epochs"] == 1 and record["test_images"] == 6 and 0 <= record["accuracy_hard"] <= 1
    assert record["max_loss_over_first"] > 0 and record["commit"]
    assert 200 < record["train_peak_pss_mb"] < 8000  # this process (torch and a model) and its workers, trained here
    docs = tmp_path / "docs"
    (docs / "results").mkdir(parents=True)
    (docs / "results" / "photos-shapes-large-two-s0.json").write_text(json.dumps(record))
    section = build_section(docs)
    assert "two glances, house CNN from scratch (`large-two`) | 1 | 1 |" in section
    record["preset"] = "photos-two"
    record["config"]["model"] |= {"combine": "presence", "background": "none"}
    assert row_name(record) == ("two glances, pretrained (`photos-two`, top 3 patches, `combine=presence`, "
                                "background `none`)")


class Split:  # what sign_hits reads of a split: files, and what `collect` needs
    def __init__(self, n):
        self.files = [f"test/x/{i}.jpg" for i in range(n)]
        self.labels = torch.zeros(n, dtype=torch.long)
        self.shape = (3, 64, 128)

    def __len__(self):
        return len(self.files)

    def take(self, index):
        return torch.zeros(len(index), 3, 64, 128, dtype=torch.uint8), torch.ones(len(index), dtype=torch.bool)


def test_sign_hits_counts_patches_holding_a_sign_centre(monkeypatch):
    from multiglance.analysis import stats

    model = build_model(ModelConfig(kind="two", image_size=64, image_width=128, channels=(4,), pool_stride=2,
                                    patch_size=32, patch_stride=32, thumb_size=16, top_k=2))  # 2 x 4 patches
    chosen = torch.tensor([[0, 2], [5, 6]])  # image 0 looks at patches 0 then 2, image 1 at 5 then 6

    def fake_collect(model, split, batch_size):
        return stats.Looks(torch.zeros(2, 8), chosen[:, 0], torch.zeros(2, dtype=torch.long), torch.arange(2),
                           torch.zeros(2, dtype=torch.long), chosen)
    monkeypatch.setattr(stats, "collect", fake_collect)
    # photographs of 32 x 64 read at 64 x 128 (scale 2): image 0's sign centre (40, 8) -> (80, 16): patch 2 (its
    # second look); image 1's (8, 24) -> (16, 48): patch 4, which it does not look at
    boxes = {"test/x/0.jpg": [[30, 4, 50, 12, 1]], "test/x/1.jpg": [[0, 16, 16, 32, 2]]}
    hits = sign_hits(model, Split(2), boxes, (32, 64))
    assert hits["photos_with_signs"] == 2 and hits["top1_holds_sign"] == 0.0 and hits["topk_holds_sign"] == 0.5
    assert hits["random_patch_holds_sign"] == 1 / 8
