# syntax=docker/dockerfile:1
# The gridwise operator image: `gridwise operator run` with kopf and the Kubernetes client, never torch.
# Build from the repository root (.dockerignore keeps the context to what is copied below):
#   docker build -t gridwise-operator:dev .
# Without Docker or a registry: hack/build-images.sh (podman on a Debian base made by debootstrap).
# Runs as uid 65532 and works with a read-only root filesystem (the chart mounts an emptyDir at /tmp).
#
# The official python:3.11-slim (bookworm, the Debian release of the local base), pinned by tag and by
# the digest of its multi-arch index; bump both together.
ARG BASE_IMAGE=python:3.11.15-slim-bookworm@sha256:d29f48a31a8b408ed19272ca1e7b10ebae13b240a27e862d3d4217c528e2e0c3

FROM ${BASE_IMAGE} AS build
# Optional, for builds behind a TLS proxy or offline (hack/build-images.sh sets them): a CA bundle,
# a directory of wheels and PIP_NO_INDEX=1. Every install below is hash-checked either way.
ARG PIP_CERT
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# /opt/build holds setuptools to build the gridwise wheel; /opt/gridwise the locked dependencies.
# httpx's own command needs httpx[cli] (click, rich), which the operator never uses: it is removed
# rather than shipped broken.
RUN python3 -m venv /opt/build && python3 -m venv /opt/gridwise
COPY requirements/build.txt requirements/operator.txt /src/requirements/
RUN /opt/build/bin/pip install --require-hashes --only-binary=:all: -r /src/requirements/build.txt \
    && /opt/gridwise/bin/pip install --require-hashes --only-binary=:all: -r /src/requirements/operator.txt \
    && rm -f /opt/gridwise/bin/httpx
WORKDIR /src
COPY pyproject.toml setup.py README.md LICENSE ./
COPY operator/gridwise ./operator/gridwise
# Without trainer-image/ the wheel has no gridwise_trainer package and no gridwise-trainer command.
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /dist .

FROM ${BASE_IMAGE}
ENV PATH=/opt/gridwise/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# uid 65532 gets a passwd entry: kopf names its peering identity after getpass.getuser(), which
# raises KeyError for a uid the image does not know (the operator crashed on start without it).
RUN groupadd --system --gid 65532 gridwise \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin gridwise
# The dependencies first (cached until the lock changes), then the small gridwise layer.
COPY --from=build /opt/gridwise /opt/gridwise
COPY --from=build /dist/ /tmp/dist/
RUN pip install --no-cache-dir --no-deps /tmp/dist/gridwise-*.whl \
    && rm -rf /tmp/dist \
    && pip check \
    && python -c "import gridwise.cli, gridwise.k8s.runtime, kopf, kubernetes_asyncio" \
    && ! python -c "import torch" 2>/dev/null \
    && test ! -e /opt/gridwise/bin/gridwise-trainer
# Labels last: a RUN step's cache key includes the ARGs declared before it, and REVISION changes
# with every commit.
ARG BASE_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="gridwise-operator" \
      org.opencontainers.image.description="Kubernetes operator that pauses, scales and resumes GPU training Jobs by grid carbon intensity" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/gridwise/gridwise" \
      org.opencontainers.image.url="https://github.com/gridwise/gridwise" \
      org.opencontainers.image.documentation="https://github.com/gridwise/gridwise#readme" \
      org.opencontainers.image.vendor="gridwise" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080
ENTRYPOINT ["gridwise", "operator", "run"]
