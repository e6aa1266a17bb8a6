"""The wheel: `interlock` is its only top-level package, it carries the help centre and every policy and data
file, and it seeds and answers a help-centre question with a citation from site-packages.

Bounded: one wheel build (~10 s), a venv without pip, `interlock seed` (embeds the help centre) and one router
run, about a minute on 2 cores. Dependencies come from the dev virtualenv through a .pth file; Interlock's code
comes only from the wheel (asserted).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("server", "tools", "graphs", "policies", "evals", "mcp_servers", "interlock")
# Not part of the source: build output, caches and local state.
_IGNORE = shutil.ignore_patterns(".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", "*.pyc", ".interlock",
                                 ".layers", ".pytest_cache", ".ruff_cache", "results", "tests", "bench")


def _source_files() -> list[str]:
    """Files of the installable folders as the wheel must hold them (`interlock/<folder>/...`)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", *FOLDERS], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    out = []
    for rel in listed:
        if not (ROOT / rel).is_file():
            continue  # deleted in the working tree
        folder, _, rest = rel.partition("/")
        out.append(f"interlock/{rest}" if folder == "interlock" else f"interlock/{folder}/{rest}")
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Build from a copy: an in-tree build leaves build/lib behind, whose stale modules would leak into wheels.
    source = tmp_path_factory.mktemp("source") / "interlock"
    shutil.copytree(ROOT, source, ignore=_IGNORE, symlinks=True)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)],
                   check=True, timeout=300, capture_output=True)
    (built,) = out.glob("interlock-*.whl")
    return built


def test_wheel_holds_one_top_level_package_with_its_data(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        (dist_info,) = {n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")}
        assert {n.split("/")[0] for n in names} == {"interlock", dist_info}
        assert zf.read(f"{dist_info}/top_level.txt").decode().split() == ["interlock"]
        record = [line.split(",")[0] for line in zf.read(f"{dist_info}/RECORD").decode().splitlines() if line]
    assert all(path.startswith(("interlock/", f"{dist_info}/")) for path in record)
    help_centre = {n for n in names if n.startswith("interlock/graphs/knowledge/") and n.endswith(".md")}
    assert len(help_centre) == len(list((ROOT / "graphs/knowledge").rglob("*.md"))) > 10
    missing = sorted(set(_source_files()) - names)
    assert not missing, missing  # every module, policy, dataset, asset and notice is inside


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--clear", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, timeout=300, capture_output=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # Dependencies only: the dev venv's site-packages directories go after the venv's own (their editable-install
    # hooks are .pth files there, which Python does not process for a path added this way).
    dev_sites = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (Path(site) / "zz_dev_dependencies.pth").write_text("\n".join(dev_sites) + "\n")
    return venv


def _env(tmp: Path, venv: Path) -> dict[str, str]:
    return {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp), "INTERLOCK_HOME": str(tmp / "home"),
            "LANGSMITH_TRACING": "false", "LANGSMITH_TEST_TRACKING": "false", "HF_HUB_OFFLINE": "1"}


ROUTER_RUN = """
import asyncio, json, interlock
from interlock.graphs.router import graph

async def main():
    out = await graph.ainvoke({"messages": [("user", "Is there a restocking fee when I return something?")]},
                              {"configurable": {"tenant": "acme"}})
    print(json.dumps({"package": interlock.__file__, "route": out.get("route"), "outcome": out.get("outcome"),
                      "answer": out["messages"][-1].content, "citations": out.get("citations") or [],
                      "retrieved": {c["chunk_id"]: c["text"] for c in out.get("retrieved") or []}}))

asyncio.run(main())
"""


def test_installed_wheel_seeds_and_answers_a_help_centre_question_with_a_citation(
    installed: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = _env(tmp_path, installed)
    seed = subprocess.run([str(installed / "bin" / "interlock"), "seed"], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=300)
    assert seed.returncode == 0, seed.stderr[-3000:]
    written = re.search(r"knowledge acme/public: .*documents_added=(\d+) .*chunks_written=(\d+) .*errors=\[\]",
                        seed.stdout)
    assert written and int(written.group(1)) > 10 and int(written.group(2)) > 0, seed.stdout

    run = subprocess.run([str(installed / "bin" / "python"), "-c", ROUTER_RUN], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(out["package"]).is_relative_to(installed)  # the code ran from the wheel, not the checkout
    assert out["route"] == "rag" and out["outcome"] == "answered", out["answer"]
    assert out["citations"]
    sources = [" ".join(p.read_text().split()) for p in (ROOT / "graphs/knowledge/acme").rglob("*.md")]
    for citation in out["citations"]:
        assert citation["verified"] and f"[#{citation['chunk_id'][:8]}]" in out["answer"]
        quote = " ".join(citation["quote"].split())
        assert quote in " ".join(out["retrieved"][citation["chunk_id"]].split())
        assert any(quote in text for text in sources)
