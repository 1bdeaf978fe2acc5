#!/usr/bin/env python3
"""Compares the Helm chart's objects with scalectl's, object by object.

Usage: compare_objects.py RENDER_DIR HELM_OUTPUT

RENDER_DIR is what `scalectl render --target kubernetes` wrote; HELM_OUTPUT is `helm
template`'s stream. Objects are matched by kind and name and must be equal in every field
except what belongs to Helm or to scalectl alone:

- `app.kubernetes.io/managed-by` (Helm or scalectl) and `helm.sh/*` labels and
  annotations of the object itself (in its top-level `metadata` only: in a selector or
  a pod template they would matter, so there they must be equal);
- the `scalectl.dev/generated` annotation and a Secret's data (the chart generates the
  password; scalectl's render never shows one);
- the Namespace, which Helm users create with `--create-namespace`.

Prints each difference with its path and exits 1 if there is any.
"""

import glob
import os
import sys

import yaml

IGNORED_KEYS = ("app.kubernetes.io/managed-by", "scalectl.dev/generated")


def clean(obj):
    """The object without what belongs to Helm or scalectl alone (top-level metadata)."""
    meta = dict(obj.get("metadata") or {})
    for part in ("labels", "annotations"):
        kept = {k: v for k, v in (meta.get(part) or {}).items() if k not in IGNORED_KEYS and not k.startswith("helm.sh/")}
        if kept:
            meta[part] = kept
        else:
            meta.pop(part, None)
    out = dict(obj)
    out["metadata"] = meta
    if out.get("kind") == "Secret":
        out.pop("data", None)
        out.pop("stringData", None)
    return out


def keyed(docs, where, problems):
    out = {}
    for d in docs:
        if not d or d.get("kind") == "Namespace":
            continue
        key = (d["kind"], d["metadata"]["name"])
        if key in out:
            problems.append(f"{key[0]}/{key[1]}: twice in {where}")
        out[key] = clean(d)
    return out


def diff(a, b, path, out):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a:
                out.append(f"{path}.{k}: only in the chart: {b[k]!r}")
            elif k not in b:
                out.append(f"{path}.{k}: only in scalectl's render: {a[k]!r}")
            else:
                diff(a[k], b[k], f"{path}.{k}", out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            diff(x, y, f"{path}.{i}", out)
    # `True == 1` in Python; in a Kubernetes object a boolean is not a number.
    elif a != b or type(a) is not type(b):
        out.append(f"{path}: scalectl {a!r}, chart {b!r}")


def main():
    render_dir, helm_output = sys.argv[1], sys.argv[2]
    ours = []
    for path in sorted(glob.glob(os.path.join(render_dir, "*.yaml"))):
        with open(path) as f:
            ours.extend(yaml.safe_load_all(f))
    with open(helm_output) as f:
        theirs = list(yaml.safe_load_all(f))
    problems = []
    a, b = keyed(ours, "scalectl's render", problems), keyed(theirs, "the chart", problems)
    for key in sorted(set(a) | set(b)):
        name = f"{key[0]}/{key[1]}"
        if key not in b:
            problems.append(f"{name}: rendered by scalectl, missing from the chart")
        elif key not in a:
            problems.append(f"{name}: in the chart, not rendered by scalectl")
        else:
            found = []
            diff(a[key], b[key], "", found)
            problems.extend(f"{name}: {p}" for p in found)
    for p in problems:
        print(p)
    print(f"compared {len(a)} objects, {len(problems)} differences")
    sys.exit(1 if problems or not a else 0)


if __name__ == "__main__":
    main()
