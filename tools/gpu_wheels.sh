#!/usr/bin/env bash
# Fetch, here, the wheels that the GPU machine lacks (its Python 3.12 has jax, flax, optax, orbax and torch, but
# not tensorflow-datasets, grain, array_record or ml_collections) into .whl/, which git ignores; tools/gpu_checks.sh
# installs them there. The versions are the ones installed in this checkout's environment, except flax: the GPU
# machine's jax is 0.11.2, whose jax.experimental.hijax renamed what flax <= 0.12.8 imports at `import flax.nnx`, and
# the image's flax version is not known; flax 0.12.12 with jax 0.11.2 passed our kernel, model and benchmark tests
# on this CPU (a Python 3.12 venv, 2026-12-06), so that pair travels.
# usage: bash tools/gpu_wheels.sh [PYTHON]   (PYTHON: the environment whose versions to take; default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-.venv/bin/python}
compiled="array-record dm-tree grain"      # wheels built for CPython 3.12 on x86-64 Linux
pure="googleapis-common-protos immutabledict ml-collections portpicker promise simple-parsing tensorflow-datasets
      tensorflow-metadata toml"              # one wheel for every Python (promise is built here from its sdist)
freeze=$("$python" -m pip list --format=freeze 2>/dev/null | tr '[:upper:]_' '[:lower:]-')
pin() { for name in "$@"; do echo "$freeze" | grep -E "^$name==" || { echo "$name is not installed in $python" >&2; exit 1; }; done; }
compiled_pins=$(pin $compiled)     # two lines: set -e sees only the last substitution of one line
pure_pins=$(pin $pure)
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir .whl
# shellcheck disable=SC2086
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $compiled_pins
"$python" -m pip wheel --quiet --no-deps -w .whl $pure_pins
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 -d .whl flax==0.12.12
du -sh .whl
