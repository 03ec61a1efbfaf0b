# syntax=docker/dockerfile:1
# The gridwise operator image: `gridwise operator run` with kopf and the Kubernetes client, never torch.
# Build from the repository root:
#   docker build -t gridwise-operator:dev .
# Runs as uid 65532 and works with a read-only root filesystem (the chart mounts an emptyDir at /tmp).
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/gridwise
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# setuptools looks under trainer-image too; an empty one keeps the trainer code out of this image.
RUN mkdir -p trainer-image \
    && /opt/gridwise/bin/pip install ".[operator]" \
    && /opt/gridwise/bin/python -c "import gridwise.cli, gridwise.k8s.runtime, kopf, kubernetes_asyncio" \
    && ! /opt/gridwise/bin/python -c "import torch" 2>/dev/null

FROM python:3.11-slim
ENV PATH=/opt/gridwise/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/gridwise /opt/gridwise
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080
ENTRYPOINT ["gridwise", "operator", "run"]
