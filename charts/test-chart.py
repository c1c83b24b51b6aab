#!/usr/bin/env python3
"""Lints and renders the kubectl-backup Helm chart with real Helm (v4, embedded by the PyPI package
helm-python-sdk; no helm binary), once per values file, and writes each rendering as a
multi-document YAML stream, as `helm template` prints it.

    charts/test-chart.py OUT_DIR                      # every charts/kubectl-backup/ci/*-values.yaml
    charts/test-chart.py OUT_DIR --values my.yaml     # only these values files
    charts/test-chart.py OUT_DIR --kubeconfig FILE    # render against a cluster: `lookup` sees live
                                                      # objects, as in `helm upgrade`

OUT_DIR/<name>.yaml is written for each <name>-values.yaml (or <name>.yaml). The exit status is 1
when lint reports an error or a warning (strict, like `helm lint --strict`) or rendering fails, 2 on
bad usage. Install the SDK with `tests/env/install.sh helm` and run this with
~/.cache/kubectl-backup/venv/bin/python.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

try:
    import helm_python as helm
except ImportError:
    sys.exit("helm_python is missing: run tests/env/install.sh helm and use ~/.cache/kubectl-backup/venv/bin/python")

HERE = pathlib.Path(__file__).resolve().parent
SEVERITY = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the one the tests run.
KUBE_VERSION = "v1.20.2"


def variant_name(path: pathlib.Path) -> str:
    stem = path.name.removesuffix(".yaml").removesuffix(".yml")
    return stem.removesuffix("-values") or stem


def lint(chart: pathlib.Path, values: dict, namespace: str, label: str) -> bool:
    """Prints every finding; true when there is no error and no warning."""
    report = helm.lint(chart, values, strict=True, namespace=namespace, kube_version=KUBE_VERSION)
    ok = not report.get("errors")
    seen = set()
    for m in report.get("messages") or []:
        severity = m.get("severity", 0)
        seen.add(str(m.get("error")).strip())
        print(f"[{label}] lint {SEVERITY.get(severity, severity)}: {m.get('path')}: {m.get('error')}", file=sys.stderr)
        if severity >= 2:
            ok = False
    for e in report.get("errors") or []:
        if str(e).strip() not in seen:
            print(f"[{label}] lint ERROR: {e}", file=sys.stderr)
    return ok


def to_stream(manifests: dict[str, str]) -> str:
    """The rendered templates (not NOTES.txt, not empty ones) as one YAML stream, by template path."""
    out = []
    for path in sorted(manifests):
        body = manifests[path].strip()
        if path.endswith("NOTES.txt") or not body:
            continue
        for doc in body.split("\n---\n"):
            if any(line.strip() and not line.lstrip().startswith("#") for line in doc.splitlines()):
                out.append(f"---\n# Source: {path}\n{doc.strip()}\n")
    return "".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", type=pathlib.Path, help="where <variant>.yaml files are written")
    p.add_argument("--chart", type=pathlib.Path, default=HERE / "kubectl-backup")
    p.add_argument("--values", type=pathlib.Path, action="append", default=[],
                   help="a values file (repeatable); default: the chart's ci/*-values.yaml")
    p.add_argument("--namespace", default="kubectl-backup", help="the release namespace")
    p.add_argument("--release", default="kubectl-backup", help="the release name")
    p.add_argument("--kubeconfig", type=pathlib.Path,
                   help="render against this cluster (lookup returns live objects, as in an upgrade)")
    a = p.parse_args()

    files = a.values or sorted((a.chart / "ci").glob("*-values.yaml"))
    if not files:
        print(f"no values files: none given and none in {a.chart / 'ci'}", file=sys.stderr)
        return 2
    a.out_dir.mkdir(parents=True, exist_ok=True)
    print(f"helm SDK {helm.helm_sdk_version()} (helm-c {helm.helm_c_version()})", file=sys.stderr)

    config = None
    if a.kubeconfig:
        config = helm.Config(kubeconfig_path=a.kubeconfig, namespace=a.namespace)
    failed = False
    with helm.Chart.load(a.chart) as chart:
        for f in files:
            label = variant_name(f)
            try:
                values = helm.values_from_yaml(f.read_text())
            except (OSError, helm.HelmError) as e:
                print(f"[{label}] cannot read {f}: {e}", file=sys.stderr)
                failed = True
                continue
            if not lint(a.chart, values, a.namespace, label):
                print(f"[{label}] lint failed", file=sys.stderr)
                failed = True
                continue
            try:
                if config is not None:
                    manifests = config.render(chart, values, name=a.release, namespace=a.namespace,
                                              is_upgrade=True)
                else:
                    manifests = chart.render(values, name=a.release, namespace=a.namespace, is_install=True)
            except helm.HelmError as e:
                print(f"[{label}] render failed: {e}", file=sys.stderr)
                failed = True
                continue
            out = a.out_dir / f"{label}.yaml"
            out.write_text(to_stream(manifests))
            notes = next((body for path, body in manifests.items() if path.endswith("NOTES.txt")), "")
            (a.out_dir / f"{label}.NOTES.txt").write_text(notes)
            print(f"[{label}] lint ok, rendered {out}", file=sys.stderr)
    if config is not None:
        config.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
