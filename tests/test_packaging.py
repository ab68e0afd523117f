"""Packaging: `python -m build` makes an sdist and, from it, a wheel with the compiled core; the wheel
installed in a fresh virtualenv (dependencies as wheels only, from the package index) runs
`voicemix demo` outside the source tree.

"A machine with only libopus0": the compiled modules may need nothing but the C library and
libopus' runtime (`libopus.so.0`, Debian package libopus0): no headers, no compiler, no other
library. Checked on the installed files' ELF dependencies (readelf) and on which package owns
the libopus they resolve to (dpkg). The same wheel is also built and run on the newest Python this
machine has (pyenv or PATH: 3.13 here), since 3.11 is what the venv uses. Both are built once per
session, at the same time (about two minutes on two cores).
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
NEWER = ("3.14", "3.13", "3.12")
ALLOWED_LIBRARIES = {"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "libopus.so.0"}


def source_files() -> list[str]:
    """What a clean clone holds: tracked files plus new ones not ignored."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                            cwd=ROOT, capture_output=True, check=True).stdout.decode()
    return sorted({f for f in listed.split("\0") if f and (ROOT / f).is_file()})


def newest_python() -> str | None:
    """The newest Python 3 newer than this one that can make a virtualenv, if any."""
    candidates = [shutil.which(f"python{v}") for v in NEWER]
    candidates += [str(p) for v in NEWER
                   for p in sorted(Path.home().glob(f".pyenv/versions/{v}*/bin/python{v}"))]
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys, venv, ensurepip; print(sys.version_info[:2])"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and eval(probe.stdout) > sys.version_info[:2]:
            return candidate
    return None


def copy_tree(destination: Path) -> Path:
    for name in source_files():
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    return destination


@pytest.fixture(scope="session")
def builds(tmp_path_factory) -> dict[str, tuple[Path | None, Path, str]]:
    """{"current" | "newest": (sdist or None, wheel, base python)}, built at the same time from
    copies of the source tree (a build writes into its tree): the sdist and a wheel from it with
    this Python, a wheel with the newest one."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("environment: not a git checkout, so the source files cannot be listed")
    current = getattr(sys, "_base_executable", sys.executable)
    jobs = {"current": (current, [sys.executable, "-m", "build"])}
    newest = newest_python()
    if newest is not None:
        jobs["newest"] = (newest, None)
    running = {}
    for name, (python, command) in jobs.items():
        tree = copy_tree(tmp_path_factory.mktemp(f"source-{name}"))
        out = tmp_path_factory.mktemp(f"dist-{name}")
        if command is None:  # the newest Python builds in its own virtualenv with `build`
            env_dir = tmp_path_factory.mktemp("build-env")
            subprocess.run([python, "-m", "venv", str(env_dir)], check=True, timeout=120)
            subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", "build"],
                           check=True, capture_output=True, timeout=600)
            command = [str(env_dir / "bin" / "python"), "-m", "build", "--wheel"]
        running[name] = (subprocess.Popen([*command, "--outdir", str(out), str(tree)],
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
                         out, python)
    result = {}
    for name, (process, out, python) in running.items():
        output, _ = process.communicate(timeout=1500)
        assert process.returncode == 0, f"{name} build failed:\n{output[-6000:]}"
        sdist = next(out.glob("voicemix-*.tar.gz"), None)
        (wheel,) = out.glob("voicemix-*.whl")
        result[name] = (sdist, wheel, python)
    return result


@pytest.fixture(scope="session")
def dist(builds) -> tuple[Path, Path]:
    sdist, wheel, _ = builds["current"]
    return sdist, wheel


@pytest.fixture(scope="session", params=["current", "newest"])
def installed(request, builds, tmp_path_factory) -> Path:
    """A fresh virtualenv with the wheel installed (this Python's, or the newest one's)."""
    if request.param not in builds:
        pytest.skip(f"environment: no Python newer than {sys.version_info[0]}.{sys.version_info[1]} "
                    f"on this machine (looked for {', '.join(NEWER)})")
    _, wheel, base_python = builds[request.param]
    venv = tmp_path_factory.mktemp(f"venv-{request.param}")
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
