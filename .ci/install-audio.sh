#!/usr/bin/env bash
# Install the Debian packages the dataset recipes read (subnet data build ...). Idempotent:
# packages already installed are left alone and no network is used then.
#
#   .ci/install-audio.sh          speech synthesis, soundfonts, Asterisk prompts (~250 MB)
#   .ci/install-audio.sh --list   print the package list and exit
#
# recipes: kws-tts, asr-tts (espeak-ng flite festival festvox-*), digits-real, prompts-real
# (asterisk-core-sounds-*-wav), instruments, instruments-unlabeled, pitch, tagging (fluidsynth + soundfonts)
set -euo pipefail

pkgs=(
  espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
  fluidsynth fluid-soundfont-gm timgm6mb-soundfont
  asterisk-core-sounds-en-wav asterisk-core-sounds-es-wav asterisk-core-sounds-fr-wav
  asterisk-core-sounds-it-wav asterisk-core-sounds-ru-wav
)
for arg in "$@"; do
  case "$arg" in
    --list) printf '%s\n' "${pkgs[@]}"; exit 0 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "install-audio.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

need=()
for pkg in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "install-audio.sh: need root (or sudo) for: apt-get install ${need[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  echo "install-audio.sh: apt-get install ${need[*]}"
  # refresh the index only when a package is unknown to it
  apt-cache show "${need[@]}" >/dev/null 2>&1 || $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
echo "install-audio.sh: ok"
