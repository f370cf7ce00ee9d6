#!/usr/bin/env python3
"""Strict validation of rendered Kubernetes manifests (run in .venv-deploy, scripts/setup-deploy.sh).

    validate-deploy.py [--kubernetes-version 1.30] FILE.yaml...

- Kubernetes kinds: the API's own OpenAPI schemas (kubernetes-validate), strict: an unknown or
  misspelt field is an error, not a silently dropped line.
- ServiceMonitor and PrometheusRule (prometheus-operator CRDs): the operator's models
  (cloudcoil.models.prometheus_operator), every field checked against them, unknown ones refused.
- Every PromQL expression (alert rules, the Grafana dashboard's targets in a ConfigMap labelled
  grafana_dashboard) must parse (promql-parser); alert names unique, a severity label on each.

Prints one line per problem, "FILE: Kind/name: where: what", and exits 1 if there are any.
"""

import argparse
import json
import re
import sys
import typing

import kubernetes_validate
import promql_parser
import pydantic
import yaml
from cloudcoil.models.prometheus_operator import v1 as monitoring

CRDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): monitoring.ServiceMonitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): monitoring.PrometheusRule,
}
DURATION = re.compile(r"^((\d+)(ms|s|m|h|d|w|y))+$")


def model_of(annotation):
    """The pydantic model inside Optional[...] / List[...] / Dict[str, ...], if any."""
    origin = typing.get_origin(annotation)
    if origin is None:
        if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
            return annotation
        return None
    for arg in typing.get_args(annotation):
        found = model_of(arg)
        if found is not None:
            return found
    return None


def unknown_fields(model, value, where):
    """Paths of the keys in `value` that `model` has no field for (recursively)."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield from unknown_fields(model, item, f"{where}[{i}]")
        return
    if not isinstance(value, dict):
        return
    fields = {}
    for name, info in model.model_fields.items():
        fields[info.alias or name] = info
        fields[name] = info
    for key, item in value.items():
        info = fields.get(key)
        if info is None:
            yield f"{where}.{key}: unknown field (not in {model.__name__})"
            continue
        inner = model_of(info.annotation)
        if inner is not None:
            yield from unknown_fields(inner, item, f"{where}.{key}")


def promql_problem(expr):
    # Grafana's variables, as Grafana substitutes them.
    expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
    expr = re.sub(r"\$\{?(\w+)\}?", "x", expr)
    try:
        promql_parser.parse(expr)
    except Exception as e:  # the parser's own error type
        return str(e)
    return None


def check_rules(doc):
    seen = set()
    for g, group in enumerate(doc.get("spec", {}).get("groups", [])):
        for r, rule in enumerate(group.get("rules", [])):
            where = f"spec.groups[{g}].rules[{r}]"
            problem = promql_problem(str(rule.get("expr", "")))
            if problem:
                yield f"{where}.expr: PromQL does not parse: {problem}"
            if "for" in rule and not DURATION.match(str(rule["for"])):
                yield f"{where}.for: not a Prometheus duration"
            name = rule.get("alert")
            if name:
                if name in seen:
                    yield f"{where}.alert: {name} is defined twice"
                seen.add(name)
                if "severity" not in (rule.get("labels") or {}):
                    yield f"{where}.labels: an alert needs a severity label"


def check_dashboard(doc):
    for key, text in (doc.get("data") or {}).items():
        try:
            dashboard = json.loads(text)
        except json.JSONDecodeError as e:
            yield f"data.{key}: not JSON: {e}"
            continue
        for p, panel in enumerate(dashboard.get("panels", [])):
            for t, target in enumerate(panel.get("targets", [])):
                problem = promql_problem(target.get("expr", ""))
                if problem:
                    yield f"data.{key}: panels[{p}].targets[{t}].expr: PromQL does not parse: {problem}"


def check(doc, version):
    kind, api = doc.get("kind"), doc.get("apiVersion")
    model = CRDS.get((api, kind))
    if model is not None:
        try:
            model.model_validate(doc)
        except pydantic.ValidationError as e:
            for err in e.errors():
                yield ".".join(str(p) for p in err["loc"]) + ": " + err["msg"]
        yield from unknown_fields(model, doc, "")
        if kind == "PrometheusRule":
            yield from check_rules(doc)
        return
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        yield f"{path}: {e.message}"
    except kubernetes_validate.SchemaNotFoundError:
        yield f"no schema for {api} {kind} in Kubernetes {version}"
    labels = (doc.get("metadata") or {}).get("labels") or {}
    if kind == "ConfigMap" and "grafana_dashboard" in labels:
        yield from check_dashboard(doc)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kubernetes-version", default="1.30.0")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    problems = checked = 0
    for path in args.files:
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for doc in docs:
            name = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
            checked += 1
            for problem in check(doc, args.kubernetes_version):
                problems += 1
                print(f"{path}: {name}: {problem}")
    print(f"{checked} resources checked, {problems} problems", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
