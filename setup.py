"""Builds the compiled transcoder; everything else about the package is in pyproject.toml.

The extension is optional: without a C compiler or the Python headers the install still
succeeds (with setuptools' warning) and parallelsync uses its pure-Python reference transcoder,
and says so when it is imported (`parallelsync.transcode.IMPL == "python"`). `scripts/setup.sh`
installs a compiler and the headers first and fails when the extension did not build.
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

# PARALLELSYNC_BUILD_REQUIRED=1 (set by scripts/setup.sh and scripts/test.sh) turns a failed
# compile into a failed install, so a development tree never runs a stale or missing kernel.
OPTIONAL = os.environ.get("PARALLELSYNC_BUILD_REQUIRED") != "1"

EXTENSIONS = [
    Extension(
        "parallelsync.transcode._kernel",
        ["parallelsync/transcode/_kernel.pyx"],
        optional=OPTIONAL,
    ),
    # the COPY read loop over psycopg's libpq (parallelsync/_native/copyreader.py)
    Extension(
        "parallelsync._native.copyread",
        ["parallelsync/_native/copyread.pyx"],
        optional=OPTIONAL,
    ),
]

setup(
    ext_modules=cythonize(
        EXTENSIONS,
        compiler_directives={"language_level": "3"},
        quiet=True,
    )
)
