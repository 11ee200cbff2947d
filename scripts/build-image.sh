#!/usr/bin/env bash
# build-image.sh builds a FROM scratch Docker image around one static binary.
#
# Usage: scripts/build-image.sh <binary> <dockerfile> <image:tag>
#
# The image is labelled cube.binary.sha256=<sha256 of the binary>. When the
# tag already carries the binary's hash nothing is rebuilt, which keeps
# `make images` fast when nothing changed.
#
# The build context is a temporary directory holding only the binary (under
# its basename, which the Dockerfile COPYs) and the Dockerfile, so nothing
# else in the repository is sent to the daemon. The legacy builder is used
# (DOCKER_BUILDKIT=0) because buildx is not available. If `docker build`
# fails, the image is assembled with `docker import` instead, which needs no
# builder at all; the Dockerfile is then not read, and the entrypoint is
# /<basename> with port 7777 exposed, matching cmd/echo/Dockerfile.
#
# CUBE_IMAGE_BUILDER=build|import forces one of the two methods (default
# auto: build, falling back to import).
set -euo pipefail

readonly label=cube.binary.sha256

usage() {
	echo "usage: $0 <binary> <dockerfile> <image:tag>" >&2
	exit 2
}

[[ $# -eq 3 ]] || usage
binary=$1
dockerfile=$2
tag=$3
builder=${CUBE_IMAGE_BUILDER:-auto}

[[ -f $binary ]] || { echo "$0: binary $binary not found" >&2; exit 1; }
[[ -f $dockerfile ]] || { echo "$0: dockerfile $dockerfile not found" >&2; exit 1; }
case $builder in
auto | build | import) ;;
*) echo "$0: CUBE_IMAGE_BUILDER must be auto, build or import, not $builder" >&2; exit 2 ;;
esac

if command -v sha256sum >/dev/null 2>&1; then
	sha=$(sha256sum "$binary" | cut -d' ' -f1)
else
	sha=$(shasum -a 256 "$binary" | cut -d' ' -f1)
fi

current=$(docker image inspect --format "{{ index .Config.Labels \"$label\" }}" "$tag" 2>/dev/null || true)
if [[ $current == "$sha" ]]; then
	echo "$tag is up to date"
	exit 0
fi

ctx=$(mktemp -d "${TMPDIR:-/tmp}/cube-image.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
name=$(basename "$binary")
cp "$binary" "$ctx/$name"
chmod 0755 "$ctx/$name"
cp "$dockerfile" "$ctx/Dockerfile"

# build_image uses the legacy builder. Its output (the image ID plus a
# deprecation notice for the legacy builder) is shown only on failure.
build_image() {
	local out
	if ! out=$(DOCKER_BUILDKIT=0 docker build -q --label "$label=$sha" -t "$tag" -f "$ctx/Dockerfile" "$ctx" 2>&1); then
		echo "$out" >&2
		return 1
	fi
}

# import_image assembles the image from a tar of the binary, for when no
# builder is usable.
import_image() {
	tar -C "$ctx" --owner=0 --group=0 --numeric-owner -cf - "$name" |
		docker import \
			--change "ENTRYPOINT [\"/$name\"]" \
			--change 'EXPOSE 7777' \
			--change "LABEL $label=$sha" \
			- "$tag" >/dev/null
}

case $builder in
build) build_image ;;
import) import_image ;;
auto)
	if ! build_image; then
		echo "$0: docker build failed, falling back to docker import" >&2
		import_image
	fi
	;;
esac
echo "built $tag"
