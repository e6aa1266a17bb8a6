"""The same benchmarks on an earlier commit and on this checkout, alternated round by round, in one run.

Load on a shared machine drifts over minutes, so a before/after pair measured an hour apart says little; here
each round runs the base and the head back to back (order swapped every round) and the table reports the median
of each side and their ratio. The base runs from a detached worktree with its own bench scripts and code, sharing
this virtualenv's installed dependencies.

    python bench/before_after.py --base 6dc7501 [--rounds 3] [--only server,mcp,retrieval]

Run it with the dev virtualenv plus psutil (the server benchmark reads process memory with it).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
Metrics = dict[str, float]


def base_checkout(rev: str, into: Path) -> Path:
    """A worktree of `rev` with a venv that sees this venv's packages and the base's code installed editable."""
    tree = into / "base"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(tree), rev], check=True,
                   capture_output=True)
    venv = tree / ".venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    # Appended after the base's own site-packages: its editable finder wins for its own packages.
    (site / "zz_shared_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps", "-e", str(tree)], check=True,
                   capture_output=True)
    return tree


def numeric_leaves(value: object, prefix: str = "") -> Metrics:
    if isinstance(value, bool):
        return {}
    if isinstance(value, int | float):
        return {prefix: float(value)}
    out: Metrics = {}
    if isinstance(value, dict):
        for key, item in value.items():
            out.update(numeric_leaves(item, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            label = item.get("chunks", i) if isinstance(item, dict) else i
            out.update(numeric_leaves(item, f"{prefix}[{label}]"))
    return out


def run(python: Path, args: list[str], tree: Path, timeout: float) -> str:
    done = subprocess.run([str(python), *args], cwd=tree, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} in {tree} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done.stdout


def server_metrics(tree: Path, python: Path) -> Metrics:
    args = ["--only", "interlock", "--seq", "200", "--conc-n", "500", "--concurrency", "50"]
    out = run(python, ["bench/server_runs.py", *args], tree, 900)
    metrics: Metrics = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and re.fullmatch(r"-?\d+(\.\d+)?", cells[1]):
            metrics[cells[0]] = float(cells[1])
    return metrics


def mcp_metrics(tree: Path, python: Path) -> Metrics:
    run(python, ["bench/mcp_calls.py", "--calls", "500"], tree, 900)
    report = json.loads((tree / "bench" / "results" / "mcp_calls.json").read_text())
    return {k: v for k, v in numeric_leaves({"http": report["http"], "memory": report["memory"]}).items()}


def retrieval_metrics(tree: Path, python: Path) -> Metrics:
    out = run(python, ["bench/retrieval.py", "--sizes", "10000", "--queries", "200"], tree, 1800)
    written = re.search(r"written (\S+)", out)
    if not written:
        raise RuntimeError("bench/retrieval.py wrote no report")
    report = json.loads(Path(written.group(1)).read_text())
    keep = {k: report[k] for k in ("sizes", "embedding_chunks_per_s", "refresh_after_1k_more_s") if k in report}
    return numeric_leaves(keep)


BENCHES: dict[str, Callable[[Path, Path], Metrics]] = {
    "server": server_metrics, "mcp": mcp_metrics, "retrieval": retrieval_metrics,
}


def table(name: str, base: list[Metrics], head: list[Metrics]) -> str:
    rows = [f"| {name} metric | base median | head median | head / base |", "|---|---|---|---|"]
    for key in sorted(set().union(*base) & set().union(*head)):
        b = statistics.median(m[key] for m in base if key in m)
        h = statistics.median(m[key] for m in head if key in m)
        ratio = f"{h / b:.2f}" if b else "–"
        rows.append(f"| {key} | {b:.2f} | {h:.2f} | {ratio} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the earlier commit")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default=",".join(BENCHES), help="comma-separated: " + ", ".join(BENCHES))
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n]
    unknown = set(names) - set(BENCHES)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="interlock-before-after-") as tmp:
        base_tree = base_checkout(args.base, Path(tmp))
        sides = {"base": (base_tree, base_tree / ".venv" / "bin" / "python"), "head": (REPO, Path(sys.executable))}
        try:
            for name in names:
                results: dict[str, list[Metrics]] = {"base": [], "head": []}
                for round_no in range(args.rounds):
                    order = ["base", "head"] if round_no % 2 == 0 else ["head", "base"]
                    for side in order:
                        tree, python = sides[side]
                        results[side].append(BENCHES[name](tree, python))
                        print(f"{name} round {round_no + 1} {side} done", file=sys.stderr, flush=True)
                print(table(name, results["base"], results["head"]) + "\n", flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base_tree)],
                           capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
