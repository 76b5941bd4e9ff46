# Build every edgerun image: docker buildx bake -f docker/docker-bake.hcl [TARGET...]
# Run from the repository root. A Jetson image and a Raspberry Pi image are both linux/arm64, so
# they cannot share one multi-arch tag: each target has its own tag; cpu and coral are multi-arch.
# Multi-platform builds need a docker-container builder (docker buildx create --use) and --push
# or --load; arm64 on an x86 builder runs under QEMU (slow) unless an arm64 node is appended.

variable "REGISTRY" {
  default = "localhost"
}

variable "TAG" {
  default = "latest"
}

group "default" {
  targets = ["cpu", "coral", "rpi", "jetson-jp5", "jetson-jp6"]
}

target "_common" {
  context = "."
}

target "cpu" {
  inherits   = ["_common"]
  dockerfile = "docker/Dockerfile"
  platforms  = ["linux/amd64", "linux/arm64"]
  args = {
    BASE_IMAGE = "python:3.11-slim-bookworm"
  }
  tags = ["${REGISTRY}/edgerun:${TAG}-cpu"]
}

target "coral" {
  inherits   = ["_common"]
  dockerfile = "docker/Dockerfile.coral"
  platforms  = ["linux/amd64", "linux/arm64"]
  args = {
    BASE_IMAGE     = "python:3.11-slim-bookworm"
    LIBEDGETPU_TAG = "16.0TF2.19.1-1"
  }
  tags = ["${REGISTRY}/edgerun:${TAG}-coral"]
}

target "rpi" {
  inherits   = ["_common"]
  dockerfile = "docker/Dockerfile.rpi"
  platforms  = ["linux/arm64"]
  args = {
    BASE_IMAGE = "debian:bookworm-slim"
  }
  tags = ["${REGISTRY}/edgerun:${TAG}-rpi"]
}

target "jetson-jp5" {
  inherits   = ["_common"]
  dockerfile = "docker/Dockerfile.jetson-jp5"
  platforms  = ["linux/arm64"]
  args = {
    BASE_IMAGE  = "nvcr.io/nvidia/l4t-jetpack:r35.4.1"
    L4T_VERSION = "35.4.1"
  }
  tags = ["${REGISTRY}/edgerun:${TAG}-jetson-jp5"]
}

target "jetson-jp6" {
  inherits   = ["_common"]
  dockerfile = "docker/Dockerfile.jetson-jp6"
  platforms  = ["linux/arm64"]
  args = {
    BASE_IMAGE  = "nvcr.io/nvidia/l4t-jetpack:r36.4.0"
    L4T_VERSION = "36.4.0"
  }
  tags = ["${REGISTRY}/edgerun:${TAG}-jetson-jp6"]
}
