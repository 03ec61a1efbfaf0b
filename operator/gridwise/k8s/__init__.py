"""Kubernetes glue: manifests, API access, kopf handlers. Decisions live elsewhere."""
