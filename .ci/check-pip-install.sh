#!/usr/bin/env bash
# `pip install .` in a fresh venv, without `-r requirements.txt`: what setup.py declares
# (install_requires) must be all that `import subnet` needs, and a non-editable install must
# build subnet_kernels._C. Installs from a copy of the tracked files (no build/ or *.so of the
# checkout), checks from outside the checkout (nothing imported from it by accident).
#
# - `-c requirements.txt`: a constraints file installs nothing itself, it only fixes the versions
#   of what the declared dependencies pull in to the pinned stack; so pip takes the wheels that
#   `make test` has just downloaded from its cache (~/.cache/pip, on unless PIP_NO_CACHE_DIR)
#   rather than fetching the newest torch (~5 GB), and a declared range that conflicts with a pin
#   fails the install.
# - two steps: setup.py imports torch to build the extension, and pip's isolated build
#   environment has setuptools only; so the first install brings the declared dependencies (and
#   the package without _C: setup.py's metadata-only build), the second rebuilds the package
#   alone against that torch (--no-build-isolation --no-deps), C++ CPU sources only
#   (SUBNET_NO_CUDA=1).
#
# Env: PYTHON (default python3), the interpreter the fresh venv is made with.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fresh="$(mktemp -d)"
trap 'rm -rf "$fresh"' EXIT
mkdir "$fresh/src"
git -C "$root" ls-files -z | (cd "$root" && tar --null -T - -cf -) | tar -xf - -C "$fresh/src"
"${PYTHON:-python3}" -m venv "$fresh/venv"
py="$fresh/venv/bin/python"
cd "$fresh/src"
"$py" -m pip install --quiet -c requirements.txt .
(cd "$fresh" && "$py" -c "import subnet; subnet.compact")
"$py" -m pip install --quiet -c requirements.txt "setuptools>=70" wheel ninja  # to build the extension
SUBNET_NO_CUDA=1 "$py" -m pip install --quiet --no-build-isolation --no-deps --force-reinstall . \
  > "$fresh/build.log" 2>&1 || (tail -40 "$fresh/build.log"; false)
"$py" -m pip check
cd "$fresh"
"$py" - <<'EOF'
import pathlib
import subnet
import subnet_kernels
import subnet_kernels._C

subnet.compact
site = pathlib.Path(subnet.__file__).parents[1]
assert site.name == "site-packages", subnet.__file__
assert pathlib.Path(subnet_kernels._C.__file__).is_relative_to(site), subnet_kernels._C.__file__
print(f"pip install . in a fresh venv: subnet and subnet_kernels._C import from {site}")
EOF
"$fresh/venv/bin/subnet" --help > /dev/null
