#!/usr/bin/env bash
# Create .venv-deploy (gitignored) with the deployment files' strict validators, hash-pinned
# from PyPI: tests/deploy.rs renders each kustomize overlay and runs scripts/validate-deploy.py
# with it (Kubernetes schemas, prometheus-operator CRD models, the PromQL parser).
exec "$(dirname "$0")/pinned-venv.sh" .venv-deploy scripts/requirements-deploy.txt \
  "kubernetes-validate + prometheus-operator models + promql-parser, about 170 MB: every Kubernetes version's schemas" \
  -c "import kubernetes_validate, promql_parser, cloudcoil.models.prometheus_operator.v1"
