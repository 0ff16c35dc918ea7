"""Every config key a message, docstring or doc page tells the user to set exists (`multiglance presets --keys`):
a message naming a key that does not exist (`set data.size`) sends the user to an unknown-key error."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from multiglance.config import all_keys
from multiglance.data.stream import load_folder_stream, open_stream
from multiglance.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
NAMED_KEY = re.compile(r"\b(?:set|--set|key) `?((?:model|data|train)\.[a-z][a-z0-9_]*)")


def named_keys(text: str) -> list[str]:
    return NAMED_KEY.findall(text)


def test_the_pattern_finds_the_keys_a_sentence_names() -> None:
    assert named_keys("set data.size (e.g. 256); or --set model.image_width=300, key `train.lr`") == [
        "data.size", "model.image_width", "train.lr"]


def test_every_key_the_sources_and_docs_name_exists() -> None:
    keys = set(all_keys())
    files = [*sorted((ROOT / "src" / "multiglance").rglob("*.py")), ROOT / "README.md",
             *sorted((ROOT / "docs").rglob("*.md"))]
    named = {(f.relative_to(ROOT).as_posix(), k) for f in files for k in named_keys(f.read_text())}
    assert len(named) > 20  # the scan reads the messages (a pattern that matches nothing would pass)
    assert sorted((f, k) for f, k in named if k not in keys) == []


@pytest.mark.parametrize("call", [lambda root: open_stream(root, "train", size=0),
                                  lambda root: load_folder_stream(root, "train")])
def test_stream_size_errors_name_real_keys(call, tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        call(tmp_path)
    named = named_keys(str(e.value))
    assert named[0] == "model.image_size" and set(named) <= set(all_keys())
