#!/usr/bin/env bash
# Packs a root filesystem directory into a one-layer image in the docker-archive format (what
# `docker save` writes and `ctr images import`, `docker load`, `podman load` and `skopeo` read),
# without a container engine.
#
#   scripts/docker-archive.sh ROOTFS CONFIG.json NAME:TAG OUT.tar
#
# CONFIG.json is the image's runtime config (the "config" object of the image config: Entrypoint,
# Cmd, Env, User, ExposedPorts, Labels, WorkingDir). The layer is a reproducible tar of ROOTFS: entries
# sorted by name, owned by root unless a file `ROOTFS.owners` lists `PATH UID:GID` lines, every mtime
# set to SOURCE_DATE_EPOCH (default 0). The same inputs give the same bytes, so the same image ID.
# The image is linux/$ARCH (environment; amd64 unless set, e.g. ARCH=arm64).
# Used by scripts/build-image.sh (the backup-webhook image) and tests/env/install.sh (the test
# cluster's pause and busybox images).
set -euo pipefail

if [ $# -ne 4 ]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
fi
ROOTFS=$1 CONFIG=$2 NAME=$3 OUT=$4
[ -d "$ROOTFS" ] || { echo "docker-archive.sh: $ROOTFS is not a directory" >&2; exit 2; }
jq -e 'type == "object"' "$CONFIG" >/dev/null 2>&1 \
  || { echo "docker-archive.sh: $CONFIG is not a JSON object" >&2; exit 2; }
case "$NAME" in
  *:*) ;;
  *) echo "docker-archive.sh: image name '$NAME' needs a tag (NAME:TAG)" >&2; exit 2 ;;
esac
EPOCH=${SOURCE_DATE_EPOCH:-0}
ARCH=${ARCH:-amd64}
CREATED=$(date -u -d "@$EPOCH" +%Y-%m-%dT%H:%M:%SZ)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The layer: deterministic GNU tar (sorted, fixed mtime/owner, no atime/ctime).
owners=()
if [ -f "$ROOTFS.owners" ]; then
  while read -r path ids; do
    [ -n "$path" ] && owners+=("$path" "$ids")
  done <"$ROOTFS.owners"
fi
tar_layer() {
  tar --create --file "$work/layer.tar" --directory "$ROOTFS" --sort=name --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    --mtime="@$EPOCH" --owner=0 --group=0 --numeric-owner "$@" .
}
if [ ${#owners[@]} -eq 0 ]; then
  tar_layer
else
  # Files owned by someone else: a tar of everything else as root, then those appended with their owner.
  excludes=()
  for ((i = 0; i < ${#owners[@]}; i += 2)); do excludes+=("--exclude=./${owners[i]#/}"); done
  tar_layer "${excludes[@]}"
  for ((i = 0; i < ${#owners[@]}; i += 2)); do
    p=${owners[i]#/} uid=${owners[i+1]%%:*} gid=${owners[i+1]##*:}
    tar --append --file "$work/layer.tar" --directory "$ROOTFS" --format=posix --no-recursion \
      --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
      --mtime="@$EPOCH" --owner="$uid" --group="$gid" --numeric-owner "./$p"
  done
fi
layer_sha=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
mkdir -p "$work/archive/$layer_sha"
mv "$work/layer.tar" "$work/archive/$layer_sha/layer.tar"

jq -c --arg diff "sha256:$layer_sha" --arg created "$CREATED" --arg arch "$ARCH" '{
    architecture: $arch, os: "linux", created: $created,
    config: .,
    rootfs: {type: "layers", diff_ids: [$diff]},
    history: [{created: $created, created_by: "scripts/docker-archive.sh"}]
  }' "$CONFIG" >"$work/config.json"
config_sha=$(sha256sum "$work/config.json" | cut -d' ' -f1)
mv "$work/config.json" "$work/archive/$config_sha.json"
jq -cn --arg config "$config_sha.json" --arg name "$NAME" --arg layer "$layer_sha/layer.tar" \
  '[{Config: $config, RepoTags: [$name], Layers: [$layer]}]' >"$work/archive/manifest.json"

mkdir -p "$(dirname "$OUT")"
# Entries without a leading ./ (manifest.json, <config>.json, <layer>/layer.tar), as `docker save` writes.
tar --create --file "$OUT.tmp" --directory "$work/archive" --sort=name --format=posix \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  --mtime="@$EPOCH" --owner=0 --group=0 --numeric-owner manifest.json "$config_sha.json" "$layer_sha"
mv "$OUT.tmp" "$OUT"
echo "sha256:$config_sha"
