"""Build the Cython core of voicemix.

The core modules (`mixer._rtp` packets and sequence arithmetic, `_rtp_source` receive statistics,
`_jitter` the jitter buffer, `_g711`, `_resample`, `_mix` the mix kernel and levels) need only a C
compiler; `mixer._opus` links libopus directly so encode/decode can run with the GIL released. The
build stops with a message naming the Debian package when libopus' headers are missing, instead of a
compiler error three screens later.
"""
import os
import shutil
import subprocess
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

OPUS_HINT = (
    "libopus development files not found (opus/opus.h). Install them first: "
    "`apt-get install libopus-dev` on Debian/Ubuntu (runtime package: libopus0)."
)


def opus_flags() -> tuple[list[str], list[str], list[str]]:
    """Return (include_dirs, library_dirs, libraries) for libopus, or exit with a clear message."""
    if shutil.which("pkg-config"):
        try:
            cflags = subprocess.check_output(["pkg-config", "--cflags", "opus"], text=True).split()
            libs = subprocess.check_output(["pkg-config", "--libs", "opus"], text=True).split()
        except subprocess.CalledProcessError:
            cflags, libs = [], []
        if libs:
            includes = [f[2:] for f in cflags if f.startswith("-I")]
            lib_dirs = [f[2:] for f in libs if f.startswith("-L")]
            names = [f[2:] for f in libs if f.startswith("-l")]
            return includes, lib_dirs, names
    for prefix in ("/usr/include", "/usr/local/include"):
        if os.path.exists(os.path.join(prefix, "opus", "opus.h")):
            return [os.path.join(prefix, "opus")], [], ["opus"]
    sys.exit(OPUS_HINT)


COMPILE_ARGS = ["-O3", "-fno-strict-aliasing"]
opus_includes, opus_lib_dirs, opus_libs = opus_flags()

extensions = [
    # the core without external libraries, one module per concern
    *[Extension(f"mixer.{name}", [f"mixer/{name}.pyx"], include_dirs=[numpy.get_include(), "mixer"],
                depends=["mixer/mix_kernel.h", "mixer/dsp_kernel.h", "mixer/_rtp.pxd", "mixer/_wire.pxd"],
                extra_compile_args=COMPILE_ARGS,
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")])
      for name in ("_rtp", "_rtp_source", "_jitter", "_g711", "_resample", "_mix", "_dtmf_detect")],
    Extension(
        "mixer._netio",
        ["mixer/_netio.pyx"],
        extra_compile_args=COMPILE_ARGS,
    ),
    Extension(
        "mixer._srtp",
        ["mixer/_srtp.pyx"],
        extra_compile_args=COMPILE_ARGS,
    ),
    Extension(
        "mixer._forward",
        ["mixer/_forward.pyx"],
        extra_compile_args=COMPILE_ARGS,
    ),
    Extension(
        "mixer._opus",
        ["mixer/_opus.pyx"],
        include_dirs=opus_includes + [numpy.get_include()],
        library_dirs=opus_lib_dirs,
        libraries=opus_libs,
        extra_compile_args=COMPILE_ARGS,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
    # STUN/TURN wire: message splitting, TCP framing, the ChannelData relay (no external library)
    Extension("mixer.turn._wire", ["mixer/turn/_wire.pyx"], extra_compile_args=COMPILE_ARGS),
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )
)
