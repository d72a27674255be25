"""CI's package check: the wheel and the sdist build from the project's files alone (those git tracks, or would:
new and not ignored), each holds every file of the package (every module of src/invprop and its package data), and
the wheel alone -- installed apart from the source tree -- imports from where it was installed and trains a short
digits run through its console command.

    .venv/bin/python .ci/package.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "invprop"
#: Files of the package besides its modules that must travel with it.
PACKAGE_DATA = ("py.typed",)
#: Files of the project the sdist must hold to build again.
SDIST_FILES = ("pyproject.toml", "README.md")


def project_files() -> list[str]:
    """The project's files git holds or would hold (tracked, or new and not ignored), relative to the root."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")  # fmt: skip
    return [name for name in listed if name and (ROOT / name).is_file()]


def package_files() -> set[str]:
    """The package's modules and data among the project's files, as the wheel names them (``invprop/...``)."""
    prefix = "src/"
    modules = {name[len(prefix) :] for name in project_files() if name.startswith(f"{prefix}invprop/")
               and name.endswith(".py")}  # fmt: skip
    return modules | {f"invprop/{name}" for name in PACKAGE_DATA}


def run(args: list[str], **kwargs) -> None:
    done = subprocess.run(args, capture_output=True, text=True, **kwargs)
    if done.returncode:
        sys.exit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def clean_copy(target: Path) -> Path:
    """The project's files (:func:`project_files`) copied to ``target``: a build there sees no stale ``build/`` or
    ``*.egg-info`` of the working tree, which would put files into the wheel that the project's own settings leave
    out."""
    for name in project_files():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target / name)
    return target


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="invprop-package-") as folder:
        work = Path(folder)
        tree = clean_copy(work / "tree")
        run([sys.executable, "-m", "build", "--wheel", "--sdist", "--outdir", str(work / "dist"), str(tree)])
        (wheel,) = (work / "dist").glob("invprop-*.whl")
        (sdist,) = (work / "dist").glob("invprop-*.tar.gz")
        wanted = package_files()
        in_wheel = set(zipfile.ZipFile(wheel).namelist())
        missing = sorted(wanted - in_wheel)
        assert not missing, f"the wheel lacks {missing}"
        with tarfile.open(sdist) as archive:
            names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
        missing = sorted({f"src/{name}" for name in wanted} - names) + sorted(set(SDIST_FILES) - names)
        assert not missing, f"the sdist lacks {missing}"

        target = work / "wheel-only"
        run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)])
        env = {**os.environ, "PYTHONPATH": str(target)}
        where = subprocess.run([sys.executable, "-c", "import invprop; print(invprop.__file__)"], env=env, cwd=work,
                               capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        assert where.startswith(str(target)), f"invprop was imported from {where}, not from the wheel"
        command = [str(target / "bin" / "invprop"), "-q", "train", "--preset", "digits", "--epochs", "1",
                   "--set", "data.subset=200", "--out", str(work / "run")]  # fmt: skip
        run(command, env=env, cwd=work)
        assert (work / "run" / "metrics.json").is_file(), "the run from the wheel wrote no metrics.json"
        print(f"package: {wheel.name} and {sdist.name} hold the package's {len(wanted)} files; the wheel alone trains")


if __name__ == "__main__":
    main()
