#!/usr/bin/env bash
# Joins one-platform docker-archive images (what scripts/build-image.sh writes) into one multi-arch
# image: an OCI image layout tar whose index.json names NAME:TAG and points to an OCI image index
# with one manifest per platform, without a container engine.
#
#   scripts/oci-index.sh OUT.tar IMAGE.docker.tar...
#
# Every input must have one image, all with the same name (its RepoTags), each for a different
# os/architecture (from its config). Layers are stored gzip-compressed, configs unchanged (so each
# platform keeps its image ID), and the index and each manifest carry the config's
# org.opencontainers.image.* labels as annotations. Reproducible: the same inputs give the same bytes.
#
# Push it with `skopeo copy --all oci-archive:OUT.tar docker://REGISTRY/NAME:TAG`; look at it with
# `skopeo inspect --raw oci-archive:OUT.tar`; `ctr -n k8s.io images import --all-platforms OUT.tar`
# imports it into containerd.
set -euo pipefail

if [ $# -lt 2 ]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
fi
OUT=$1; shift
for tool in jq tar gzip sha256sum; do
  command -v "$tool" >/dev/null || { echo "oci-index.sh: $tool is missing" >&2; exit 1; }
done
EPOCH=${SOURCE_DATE_EPOCH:-0}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
blobs=$work/layout/blobs/sha256
mkdir -p "$blobs"

# Stores FILE as a blob; prints its digest (sha256:...).
blob() {
  local sha
  sha=$(sha256sum "$1" | cut -d' ' -f1)
  mv "$1" "$blobs/$sha"
  echo "sha256:$sha"
}
size() { stat -c %s "$blobs/${1#sha256:}"; }

name=""
descriptors=$work/descriptors.jsonl
: >"$descriptors"
for archive in "$@"; do
  [ -f "$archive" ] || { echo "oci-index.sh: $archive does not exist" >&2; exit 1; }
  in=$work/in
  rm -rf "$in" && mkdir -p "$in"
  tar -xf "$archive" -C "$in"
  [ "$(jq length "$in/manifest.json")" = 1 ] || { echo "oci-index.sh: $archive must hold exactly one image" >&2; exit 1; }
  this=$(jq -r '.[0].RepoTags[0] // ""' "$in/manifest.json")
  [ -n "$this" ] || { echo "oci-index.sh: $archive has no image name (RepoTags)" >&2; exit 1; }
  [ -z "$name" ] || [ "$name" = "$this" ] || { echo "oci-index.sh: $archive is $this, the others $name" >&2; exit 1; }
  name=$this
  config_file=$in/$(jq -r '.[0].Config' "$in/manifest.json")
  platform=$(jq -c '{os, architecture} + (if .variant then {variant} else {} end)' "$config_file")
  if grep -qF "\"platform\":$platform" "$descriptors"; then
    echo "oci-index.sh: $archive is for $platform, like another input" >&2; exit 1
  fi
  labels=$(jq -c '.config.Labels // {}' "$config_file")
  cp "$config_file" "$work/config"
  config=$(blob "$work/config")
  layers=()
  for layer in $(jq -r '.[0].Layers[]' "$in/manifest.json"); do
    gzip -n -c "$in/$layer" >"$work/layer"
    layers+=("$(blob "$work/layer")")
  done
  layer_descriptors=$(for l in "${layers[@]}"; do
      jq -cn --arg d "$l" --argjson s "$(size "$l")" \
        '{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $d, size: $s}'
    done | jq -cs .)
  jq -cn --arg config "$config" --argjson csize "$(size "$config")" --argjson layers "$layer_descriptors" \
    --argjson labels "$labels" '{
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $config, size: $csize},
      layers: $layers,
      annotations: $labels
    }' >"$work/manifest"
  manifest=$(blob "$work/manifest")
  jq -cn --arg d "$manifest" --argjson s "$(size "$manifest")" --argjson platform "$platform" \
    '{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $d, size: $s, platform: $platform}' \
    >>"$descriptors"
  last_labels=$labels
done

# The image index of all platforms (sorted, so input order does not matter), named by index.json.
jq -cs --argjson labels "$last_labels" '{
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.index.v1+json",
    manifests: sort_by(.platform.os, .platform.architecture),
    annotations: ($labels | with_entries(select(.key | startswith("org.opencontainers.image."))))
  }' "$descriptors" >"$work/index"
index=$(blob "$work/index")
tag=${name##*:}
jq -cn --arg d "$index" --argjson s "$(size "$index")" --arg name "$name" --arg tag "$tag" '{
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.index.v1+json",
    manifests: [{mediaType: "application/vnd.oci.image.index.v1+json", digest: $d, size: $s,
                 annotations: {"org.opencontainers.image.ref.name": $tag, "io.containerd.image.name": $name}}]
  }' >"$work/layout/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$work/layout/oci-layout"

mkdir -p "$(dirname "$OUT")"
tar --create --file "$OUT.tmp" --directory "$work/layout" --sort=name --format=posix \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  --mtime="@$EPOCH" --owner=0 --group=0 --numeric-owner oci-layout index.json blobs
mv "$OUT.tmp" "$OUT"
echo "$index"
