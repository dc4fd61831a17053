#!/usr/bin/env bash
# Installs the Debian packages jointist-jax needs: FluidSynth (renders the synthetic
# Slakh-format dataset) with its General MIDI soundfont, libsndfile for FLAC I/O, and Chromium
# with its WebDriver (the browser test of jointist-app drives it headless; no browser download).
# Does nothing when they are already present.
set -euo pipefail

needed=()
command -v fluidsynth >/dev/null 2>&1 || needed+=(fluidsynth)
[ -e /usr/share/sounds/sf2/TimGM6mb.sf2 ] || needed+=(timgm6mb-soundfont)
ldconfig -p 2>/dev/null | grep -q libsndfile || needed+=(libsndfile1)
[ -x /usr/bin/chromium ] || needed+=(chromium)
[ -x /usr/bin/chromedriver ] || needed+=(chromium-driver)

if [ ${#needed[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
echo "installing Debian packages: ${needed[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${needed[@]}"
