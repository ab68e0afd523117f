"""Packaging: `python -m build` makes an sdist and, from it, a wheel with the compiled core; the wheel
installed in a fresh virtualenv (dependencies as wheels only, from the package index) runs
`voicemix demo` outside the source tree.

"A machine with only libopus0": the compiled modules may need nothing but the C library and
libopus' runtime (`libopus.so.0`, Debian package libopus0): no headers, no compiler, no other
library. Checked on the installed files' ELF dependencies (readelf) and on which package owns
the libopus they resolve to (dpkg). The wheel is built once per session (about two minutes).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED_LIBRARIES = {"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "libopus.so.0"}


def source_files() -> list[str]:
    """What a clean clone holds: tracked files plus new ones not ignored."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                            cwd=ROOT, capture_output=True, check=True).stdout.decode()
    return sorted({f for f in listed.split("\0") if f and (ROOT / f).is_file()})


@pytest.fixture(scope="session")
def dist(tmp_path_factory) -> tuple[Path, Path]:
    """(sdist, wheel), built from a copy of the source tree (the build writes into its tree)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("environment: not a git checkout, so the source files cannot be listed")
    tree = tmp_path_factory.mktemp("source")
    for name in source_files():
        target = tree / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    out = tmp_path_factory.mktemp("dist")
    build = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(tree)],
                           capture_output=True, text=True, timeout=1200)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    (sdist,) = out.glob("voicemix-*.tar.gz")
    (wheel,) = out.glob("voicemix-*.whl")
    return sdist, wheel


@pytest.fixture(scope="session")
def installed(dist, tmp_path_factory) -> Path:
    """A fresh virtualenv with the wheel installed; its bin directory."""
    _, wheel = dist
    venv = tmp_path_factory.mktemp("venv")
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                              "--only-binary=:all:", str(wheel)],
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    return venv


def test_sdist_has_what_builds_the_wheel_and_no_build_outputs(dist):
    sdist, _ = dist
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for required in ("setup.py", "pyproject.toml", "README.md", "mixer/_rtp.pyx", "mixer/_rtp.pxd",
                     "mixer/mix_kernel.h", "mixer/turn/_wire.pyx", "docs/configuration.md"):
        assert required in names, required
    assert not [n for n in names if n.endswith((".so", ".o", ".pyc"))]


def test_wheel_holds_the_compiled_core_and_every_package_file(dist):
    _, wheel = dist
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    compiled = {n.split(".")[0] for n in names if n.endswith(".so")}
    for module in ("_rtp", "_rtp_source", "_jitter", "_g711", "_resample", "_mix", "_opus", "_netio",
                   "_srtp", "_forward"):
        assert f"mixer/{module}" in compiled, module
    assert "mixer/turn/_wire" in compiled
    # every file of the two packages in the source tree (data files included) is in the wheel
    missing = [f for f in source_files() if f.startswith(("mixer/", "controller/"))
               and not f.endswith(".gitignore") and f not in names]
    assert not missing, f"not in the wheel (add them to package-data in pyproject.toml): {missing}"
    assert not [n for n in names if n.endswith(".c")], "generated C belongs in the sdist only"
    assert not [n for n in names if n.startswith(("tests/", "bench/"))]


def test_the_installed_wheel_runs_the_demo_outside_the_source_tree(installed, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{installed / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    where = subprocess.run([str(installed / "bin" / "python"), "-c",
                            "import mixer, controller; print(mixer.__file__, controller.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, env=env, check=True)
    assert str(ROOT) not in where.stdout and str(installed) in where.stdout
    version = subprocess.run([str(installed / "bin" / "voicemix"), "version"], capture_output=True,
                             text=True, cwd=tmp_path, env=env, timeout=60)
    assert version.returncode == 0 and "libopus" in version.stdout, version.stderr
    demo = subprocess.run([str(installed / "bin" / "voicemix"), "demo", "-n", "3", "--duration", "3"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]


def test_the_compiled_core_needs_only_libc_and_libopus0(installed):
    if shutil.which("readelf") is None or shutil.which("dpkg") is None:
        pytest.skip("environment: readelf or dpkg is missing (not a Debian machine with binutils)")
    libraries = set()
    for module in sorted(installed.glob("lib/python*/site-packages/mixer/**/*.so")):
        dynamic = subprocess.run(["readelf", "-d", str(module)], capture_output=True, text=True,
                                 check=True).stdout
        needed = {line.split("[")[1].split("]")[0] for line in dynamic.splitlines() if "(NEEDED)" in line}
        assert needed <= ALLOWED_LIBRARIES, (module.name, needed - ALLOWED_LIBRARIES)
        libraries |= needed
    assert "libopus.so.0" in libraries
    resolved = subprocess.run(["ldd", str(next(installed.glob("lib/python*/site-packages/mixer/_opus*.so")))],
                              capture_output=True, text=True, check=True).stdout
    path = next(line.split("=>")[1].split("(")[0].strip() for line in resolved.splitlines()
                if "libopus.so.0" in line)
    owner = subprocess.run(["dpkg", "-S", os.path.realpath(path)], capture_output=True, text=True)
    if owner.returncode != 0:  # merged /usr: dpkg knows the /lib path
        owner = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
    assert owner.stdout.split(":")[0] == "libopus0", owner.stdout + owner.stderr
