#!/usr/bin/env python3
"""Validates rendered Kubernetes objects the way an API server would, offline.

Usage: validate_kube.py CRD_DIR VERSIONS FILE...

- Core objects (Deployment, Service, ...) against the upstream OpenAPI schemas of each
  Kubernetes version in VERSIONS (comma-separated, e.g. 1.33.0,1.37.0), strictly (an
  unknown field is an error), with the `kubernetes-validate` package.
- CloudNativePG objects against the `openAPIV3Schema` of their CRD in CRD_DIR, also
  strictly: the API server would prune an unknown field, silently dropping a setting,
  so here it is an error.

Prints one line per problem (file, object, path, message) and exits 1 if there is any.
"""

import glob
import os
import sys

import jsonschema
import kubernetes_validate
import yaml


def strict(schema):
    """The schema with unknown properties forbidden wherever the CRD lists properties."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def crd_validators(crd_dir):
    validators = {}
    for path in glob.glob(os.path.join(crd_dir, "*.yaml")):
        with open(path) as f:
            crd = yaml.safe_load(f)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            schema = strict(v["schema"]["openAPIV3Schema"])
            # metadata is the API server's own; the CRD says only "object".
            schema["properties"]["metadata"] = {"type": "object"}
            validators[(f"{group}/{v['name']}", kind)] = jsonschema.Draft7Validator(schema)
    return validators


def main():
    crd_dir, versions, files = sys.argv[1], sys.argv[2].split(","), sys.argv[3:]
    crds = crd_validators(crd_dir)
    problems = 0
    checked = 0
    for path in files:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
        for obj in docs:
            what = f"{path}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
            key = (obj.get("apiVersion"), obj.get("kind"))
            if key in crds:
                for e in crds[key].iter_errors(obj):
                    print(f"{what}: {'.'.join(str(p) for p in e.absolute_path)}: {e.message}")
                    problems += 1
            elif key[0] and "cnpg.io" in key[0]:
                print(f"{what}: no CRD for {key[0]} {key[1]} in {crd_dir}")
                problems += 1
            else:
                for version in versions:
                    try:
                        kubernetes_validate.validate(obj, version, strict=True)
                    except kubernetes_validate.ValidationError as e:
                        print(f"{what}: Kubernetes {version}: {'.'.join(str(p) for p in e.path)}: {e.message}")
                        problems += 1
                    except kubernetes_validate.SchemaNotFoundError as e:
                        print(f"{what}: Kubernetes {version}: no schema: {e}")
                        problems += 1
            checked += 1
    print(f"checked {checked} objects, {problems} problems")
    sys.exit(1 if problems or not checked else 0)


if __name__ == "__main__":
    main()
