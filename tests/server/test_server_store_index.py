"""langgraph.json `store.index` parsing: the project's MiniLM by name, a `module:function` or `./file.py:function`,
and clear errors for what cannot be loaded (startup fails with the reason, not at the first search)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from interlock.server.project import ProjectError, load_project
from interlock.server.store_index import index_config, minilm_embed


def project(tmp_path: Path, index: object) -> object:
    (tmp_path / "graphs.py").write_text("graph = None\n")
    (tmp_path / "embedder.py").write_text("def embed(texts):\n    return [[float(len(t)), 1.0] for t in texts]\n")
    (tmp_path / "langgraph.json").write_text(json.dumps({"graphs": {"g": "./graphs.py:graph"},
                                                         "store": {"index": index}}))
    return load_project(tmp_path / "langgraph.json")


def test_names_the_project_embedder_or_a_file_function(tmp_path: Path) -> None:
    config = index_config(project(tmp_path, {"embed": "interlock:minilm", "dims": 384, "fields": ["text"]}))
    assert config is not None and config["embed"] is minilm_embed and config["fields"] == ["text"]
    custom = index_config(project(tmp_path, {"embed": "./embedder.py:embed", "dims": 2}))
    assert custom is not None and custom["embed"](["abc"]) == [[3.0, 1.0]]


@pytest.mark.parametrize(
    ("index", "needle"),
    [
        ({"embed": "openai:text-embedding-3-small", "dims": 1536}, "neither"),
        ({"embed": "interlock:minilm", "dims": 0}, "dims"),
        ({"embed": "interlock:minilm", "dims": 384, "fields": "text"}, "fields"),
        ({"dims": 384}, "embed"),
        ("minilm", "object"),
    ],
)
def test_bad_index_configs_fail_at_startup_naming_the_problem(tmp_path: Path, index: object, needle: str) -> None:
    with pytest.raises(ProjectError, match=needle):
        index_config(project(tmp_path, index))


def test_no_index_configured(tmp_path: Path) -> None:
    (tmp_path / "graphs.py").write_text("graph = None\n")
    (tmp_path / "langgraph.json").write_text(json.dumps({"graphs": {"g": "./graphs.py:graph"}}))
    assert index_config(load_project(tmp_path / "langgraph.json")) is None
