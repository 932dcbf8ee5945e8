#!/usr/bin/env bash
# Installs a released kubectl-agent with checksum verification. Used by the
# GitHub Action (action.yml) and usable by hand:
#   KA_VERSION=v0.1.0 KA_DEST=$HOME/.local/bin plugin/install.sh
# KA_BASE is the releases URL (default GitHub's); downloads are
# $KA_BASE/download/<tag>/<archive> and $KA_BASE/download/<tag>/checksums.txt.
set -euo pipefail
version=${KA_VERSION:-latest}
base=${KA_BASE:-https://github.com/kubectl-agent/kubectl-agent/releases}
dest=${KA_DEST:-$HOME/.local/bin}

fail() { echo "::error title=kubectl-agent install::$*" >&2; exit 1; }

case "$(uname -s)" in
  Linux) os=linux ;; Darwin) os=darwin ;; MINGW*|MSYS*|CYGWIN*) os=windows ;;
  *) fail "unsupported OS $(uname -s)" ;;
esac
case "$(uname -m)" in
  x86_64|amd64) arch=amd64 ;; aarch64|arm64) arch=arm64 ;;
  *) fail "unsupported CPU $(uname -m)" ;;
esac
if [ "$version" = latest ]; then
  # GitHub redirects /latest to /tag/<version>; read the tag from the redirect.
  version=$(curl -fsSLI -o /dev/null -w '%{url_effective}' "$base/latest") || fail "cannot resolve the latest release at $base/latest"
  version=${version##*/}
fi
ext=tar.gz; [ "$os" = windows ] && ext=zip
archive="kubectl-agent_${version#v}_${os}_${arch}.$ext"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
curl -fsSL -o "$tmp/$archive" "$base/download/$version/$archive" || fail "cannot download $base/download/$version/$archive"
curl -fsSL -o "$tmp/checksums.txt" "$base/download/$version/checksums.txt" || fail "cannot download checksums.txt for $version"
want=$(awk -v f="$archive" '$2 == f {print $1}' "$tmp/checksums.txt")
[ -n "$want" ] || fail "checksums.txt of $version lists no $archive"
if command -v sha256sum >/dev/null; then got=$(sha256sum "$tmp/$archive" | awk '{print $1}'); else got=$(shasum -a 256 "$tmp/$archive" | awk '{print $1}'); fi
[ "$got" = "$want" ] || fail "checksum mismatch for $archive: got $got, checksums.txt says $want"
mkdir -p "$dest"
if [ "$ext" = zip ]; then unzip -q -o "$tmp/$archive" -d "$tmp/x"; else mkdir -p "$tmp/x" && tar -xzf "$tmp/$archive" -C "$tmp/x"; fi
for f in kubectl-agent kubectl-agent.exe kubectl_complete-agent; do
  [ -f "$tmp/x/$f" ] && install -m 0755 "$tmp/x/$f" "$dest/$f"
done
[ -x "$dest/kubectl-agent" ] || [ -x "$dest/kubectl-agent.exe" ] || fail "the archive holds no kubectl-agent binary"
[ -n "${GITHUB_PATH:-}" ] && echo "$dest" >> "$GITHUB_PATH"
echo "kubectl-agent $version installed into $dest (sha256 $got verified)"
