# The two commands a new machine needs (see README.md). Everything they install is cached
# under ~/.cache/gridwise, outside the checkout, and reused.
.PHONY: demo test lint controlplane venv images help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

demo: ## run the operator on a local cluster against a replayed real trace
	hack/demo.sh $(ARGS)

test: ## build what is missing, then lint, type-check and run every test (what CI runs)
	hack/test.sh $(ARGS)

controlplane: ## build (or reuse) etcd, kube-apiserver, controllers, kubectl, kwok, helm
	hack/build-control-plane.sh

venv: ## create (or reuse) the virtualenv with the operator, trainer and dev tools
	hack/venv.sh

images: ## build (or reuse) the operator and trainer images with podman, no registry; prints their refs
	hack/build-images.sh $(ARGS)
