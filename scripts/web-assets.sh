#!/usr/bin/env bash
# The scripts the book's pages load — MathJax (math), mermaid (the articles' flowcharts) and the
# ipywidgets HTML manager (widgets) — fetched from the npm registry at build time into
# _build/web/webassets/, which the Sphinx build copies into the site (html_extra_path in _config.yml).
# The built book then serves them itself and reads with no network: a classroom without internet works.
# Usage: scripts/web-assets.sh [DEST]   (DEST defaults to _build/web; re-running with the same versions
# does nothing).
set -euo pipefail

dest=${1:-_build/web}
packages="mathjax@3.2.2 mermaid@11.6.0 @jupyter-widgets/html-manager@1.0.15"
stamp="$dest/webassets/VERSIONS"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$packages" ]; then
  exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "web-assets: installing npm from Debian's packages" >&2
    DEBIAN_FRONTEND=noninteractive apt-get -qq update >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get -qq install -y npm >/dev/null
  else
    echo "web-assets: npm is needed to fetch MathJax, mermaid and the widget scripts for the book." >&2
    echo "  Install Node.js with npm (Debian/Ubuntu: sudo apt-get install npm) and run this again." >&2
    exit 1
  fi
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# `npm pack` fetches each package's tarball alone (no dependency tree): the files we serve are bundles.
(cd "$work" && npm pack --silent --loglevel=error $packages >/dev/null)
for tgz in "$work"/*.tgz; do
  name=$(basename "$tgz" .tgz)
  mkdir -p "$work/$name"
  tar xzf "$tgz" -C "$work/$name"
done

out="$dest/webassets.tmp"
rm -rf "$out"
mkdir -p "$out/mathjax" "$out/mermaid" "$out/html-manager"
mathjax="$work/mathjax-3.2.2/package/es5"
cp "$mathjax/tex-mml-chtml.js" "$out/mathjax/"
# tex-mml-chtml.js loads its fonts and any extra TeX packages relative to its own location.
cp -r "$mathjax/output" "$mathjax/input" "$mathjax/a11y" "$mathjax/ui" "$out/mathjax/"
cp "$work/mermaid-11.6.0/package/dist/mermaid.esm.min.mjs" "$out/mermaid/"
mkdir -p "$out/mermaid/chunks"
cp -r "$work/mermaid-11.6.0/package/dist/chunks/mermaid.esm.min" "$out/mermaid/chunks/"
cp -r "$work/jupyter-widgets-html-manager-1.0.15/package/dist/." "$out/html-manager/"
for pkg in mathjax-3.2.2 mermaid-11.6.0 jupyter-widgets-html-manager-1.0.15; do
  [ -f "$work/$pkg/package/LICENSE" ] && cp "$work/$pkg/package/LICENSE" "$out/LICENSE.$pkg"
done
echo "$packages" > "$out/VERSIONS"
rm -rf "$dest/webassets"
mv "$out" "$dest/webassets"
echo "web-assets: $packages -> $dest/webassets ($(du -sh "$dest/webassets" | cut -f1))" >&2
