"""Build every distribution, check its metadata, and install each layer alone from wheels.

What a user who installs one layer gets is not the editable checkout the test suite
runs on: this script builds each wheel and sdist with ``hatch build``, checks that
each carries its license text, project links, classifiers and a README, then creates
a fresh virtual environment per layer, installs that layer from the built wheels
(siblings from the same folder, third-party dependencies from the index) and runs a
small program that uses it.

Usage: ``python scripts/check_dists.py [--keep DIR]``
"""

from __future__ import annotations

import argparse
import email.parser
import shutil
import subprocess
import sys
import tarfile
import tempfile
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = sorted(
    path.parent
    for path in [*ROOT.glob("packages/*/pyproject.toml"), *ROOT.glob("extensions/*/pyproject.toml")]
)

# A small program per layer, run in a virtual environment holding that layer alone: it
# must work, and it must not find the layers above it.
SMOKE: dict[str, str] = {
    "procio-text": """
import anyio, importlib.util
from anyio.streams.memory import MemoryObjectReceiveStream
from procio_text import LineReceiveStream

async def main():
    send, receive = anyio.create_memory_object_stream[bytes](10)
    await send.send(b"one\\r\\ntwo\\nthr")
    await send.send(b"ee")
    send.close()
    lines = [line async for line in LineReceiveStream(receive)]
    assert lines == ["one", "two", "three"], lines
    assert importlib.util.find_spec("procio_process") is None

anyio.run(main)
print("procio-text ok")
""",
    "procio-process": """
import anyio, importlib.util
from procio_process import run_process

async def main():
    result = await run_process(["echo", "hi"])
    assert result.stdout == b"hi\\n", result
    assert importlib.util.find_spec("procio_text") is None
    assert importlib.util.find_spec("procio_workers") is None

anyio.run(main)
print("procio-process ok")
""",
    "procio-workers": """
import anyio, importlib.util, operator
from procio_workers import WorkerPool, to_process

async def main():
    assert await to_process.run_sync(operator.add, 2, 3) == 5
    async with WorkerPool(max_workers=2) as pool:
        assert await pool.run_sync(operator.mul, 6, 7) == 42
    assert importlib.util.find_spec("procio_text") is None

if __name__ == "__main__":
    anyio.run(main)
    print("procio-workers ok")
""",
    "procio": """
import anyio, operator
import procio

async def main():
    result = await procio.run_process(["echo", "hi"])
    assert result.stdout == b"hi\\n"
    assert await procio.to_process.run_sync(operator.neg, 4) == -4

if __name__ == "__main__":
    anyio.run(main)
    print("procio ok")
""",
}


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(archive.read(name).decode())


def check_wheel(wheel: Path) -> list[str]:
    """Return what is missing from *wheel*'s metadata and contents."""
    problems = []
    meta = _metadata(wheel)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
        problems.append("no LICENSE in the wheel")
    if not any(n.endswith("/py.typed") for n in names):
        problems.append("no py.typed in the wheel")
    if meta.get("License-Expression") != "MIT":
        problems.append(f"License-Expression is {meta.get('License-Expression')!r}")
    urls = {value.split(",", 1)[0] for value in meta.get_all("Project-URL") or []}
    for label in ("Homepage", "Documentation", "Source", "Issues"):
        if label not in urls:
            problems.append(f"no Project-URL {label}")
    classifiers = meta.get_all("Classifier") or []
    if not any(c.startswith("Operating System ::") for c in classifiers):
        problems.append("no operating-system classifier")
    if not any(c.startswith("Programming Language :: Python :: 3.") for c in classifiers):
        problems.append("no Python-version classifier")
    if meta.get("Description-Content-Type") != "text/markdown" or len(meta.get_payload()) < 200:
        problems.append("no README as the long description")
    return problems


def check_sdist(sdist: Path) -> list[str]:
    """Return what is missing from *sdist*."""
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
    wanted = ("LICENSE", "README.md", "pyproject.toml")
    return [
        f"no {name} in the sdist"
        for name in wanted
        if not any(n.endswith(f"/{name}") for n in names)
    ]


def build(dist: Path) -> None:
    for folder in FOLDERS:
        done = subprocess.run(
            ["hatch", "build", "-t", "wheel", "-t", "sdist", str(dist)],
            cwd=folder,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode:
            sys.exit(f"building {folder.name} failed:\n{done.stdout}{done.stderr}")


def smoke(dist: Path, distribution: str, code: str, work: Path) -> None:
    env_dir = work / f"venv-{distribution}"
    venv.create(env_dir, with_pip=True, clear=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--find-links",
            str(dist),
            distribution,
        ],
        check=True,
    )
    script = work / f"smoke_{distribution.replace('-', '_')}.py"
    script.write_text(code)
    # Run outside the repository so that nothing is imported from the checkout.
    subprocess.run([str(python), str(script)], cwd=work, check=True, timeout=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="build into this folder and keep it")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="procio-dists-"))
    try:
        dist = args.keep or work / "dist"
        dist.mkdir(parents=True, exist_ok=True)
        build(dist)
        problems = []
        for folder in FOLDERS:
            name = folder.name.replace("-", "_")
            wheels = list(dist.glob(f"{name}-*.whl"))
            sdists = list(dist.glob(f"{name}-*.tar.gz"))
            if len(wheels) != 1 or len(sdists) != 1:
                problems.append(f"{folder.name}: expected one wheel and one sdist")
                continue
            problems += [f"{wheels[0].name}: {p}" for p in check_wheel(wheels[0])]
            problems += [f"{sdists[0].name}: {p}" for p in check_sdist(sdists[0])]
        if problems:
            print("\n".join(problems), file=sys.stderr)
            return 1
        print(f"{len(FOLDERS)} distributions built and checked")
        for distribution, code in SMOKE.items():
            smoke(dist, distribution, code, work)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
