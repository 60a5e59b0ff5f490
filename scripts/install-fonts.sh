#!/usr/bin/env bash
# Make sure a CJK font is installed so Chinese labels in plots (and pages) render.
# As root with apt (Debian/Ubuntu/CI/Colab) it installs fonts-wqy-microhei; otherwise it says how.
set -euo pipefail
has_cjk_font() { fc-list 2>/dev/null | grep -qiE "WenQuanYi|Noto Sans CJK|Source Han Sans|PingFang|Heiti|YaHei|SimHei"; }
if has_cjk_font; then
  echo "CJK font: present"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "CJK font: installing fonts-wqy-microhei with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq fonts-wqy-microhei >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && apt-get install -y -qq fonts-wqy-microhei >/dev/null; }
  has_cjk_font && echo "CJK font: installed"
else
  echo "CJK font: none found and cannot install it (not root or no apt-get)." >&2
  echo "  Install one: sudo apt-get install fonts-wqy-microhei (Debian/Ubuntu), or Noto Sans CJK SC." >&2
fi
