"""Kubernetes glue: manifests, API access, kopf handlers. Decisions live elsewhere."""

from gridwise.k8s import lazy_client

# Before kopf or any module here imports kubernetes_asyncio: about 30 MiB less resident.
lazy_client.install()
