"""Chart checks for helm/keygate, run by .ci/check-chart.

Lints the chart and renders it with Helm's own engine (the helm-python-sdk bindings), once
per values file in this directory, then validates every rendered manifest with
kubernetes-validate --strict, checks the Prometheus Operator resources (no schema ships for
them) and the selectors and ports that tie the resources together, confirms that broken
values are refused, and that the README's table lists every value.

    python check_chart.py --kube-version 1.27.0 --kube-version 1.34.0 --out DIR
    python check_chart.py --update-readme      # rewrite the README's values table

Exits 1 when anything fails.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

CI_DIR = Path(__file__).resolve().parent
CHART_DIR = CI_DIR.parent
README = CHART_DIR / "README.md"
RELEASE = "keygate"
NAMESPACE = "keygate"

# Values rendered, linted and validated: the chart's defaults (no values file), migrations in a hook Job with a chart-created Secret,
# and a production-like release with every optional feature on.
VALUE_SETS = ["default", "job-migrations", "production"]

# Smaller variants over the chart's defaults, for template branches the files above do not
# take; rendered and validated the same way.
VARIANTS: dict[str, dict[str, Any]] = {
    "existing-objects": {
        "database": {"existingSecret": "keygate-db", "existingSecretKey": "uri"},
        "policy": {"existingConfigMap": "keygate-policy-file", "existingConfigMapKey": "acme.yaml"},
        "serviceAccount": {"create": False, "name": "keygate-runtime"},
        "image": {"digest": "sha256:" + "ab" * 32},
        "tls": {"enabled": True, "existingSecret": "keygate-tls"},
        "service": {"type": "NodePort", "nodePort": 30051},
        "config": {"reflection": False},
    },
    "tls-probe-secrets": {
        "tls": {"enabled": True, "existingSecret": "keygate-tls",
                "clientCa": {"enabled": True, "existingSecret": "gateway-ca"}},
        "probes": {"tls": {"caSecret": "internal-ca", "caKey": "root.pem",
                           "serverName": "keygate.internal.example",
                           "clientCertSecret": "keygate-probe-client"},
                   "startup": {"timeoutSeconds": 5}},
    },
    "locked-down": {
        "replicaCount": 1,
        "metrics": {"enabled": False},
        "networkPolicy": {"enabled": True, "egress": {"enabled": True, "allowDns": False}},
        "topologySpread": {"enabled": False},
        "tests": {"enabled": False},
    },
    "memory-autoscaling": {
        "autoscaling": {"enabled": True, "minReplicas": 2, "targetCPUUtilizationPercentage": None,
                        "targetMemoryUtilizationPercentage": 75},
        "podDisruptionBudget": {"minAvailable": "50%"},
        "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
    },
    "long-names": {
        "fullnameOverride": "k" * 63,
        "migrations": {"mode": "job"},
        "service": {"headless": {"enabled": True}},
        "policy": {"content": "catalog: {}\n"},
    },
}
# Kubernetes versions a variant's fields need, when newer than the chart's minimum.
VARIANT_MIN_KUBE = {"memory-autoscaling": "1.30.0"}  # preStop sleep

# Values that must be refused, with a fragment of the expected message.
BASE = {"database": {"url": "postgres://keygate@postgres:5432/keygate"}}
MUST_FAIL: list[tuple[str, dict[str, Any], str]] = [
    ("no database configured", {"database": {"url": ""}}, "set database.url"),
    ("misspelt value key", {**BASE, "replicaCont": 3}, "replicaCont"),
    ("misspelt nested value key", {"database": {**BASE["database"], "existingSecert": "x"}}, "existingSecert"),
    ("unknown migrations.mode", {**BASE, "migrations": {"mode": "Job"}}, "migrations/mode"),
    ("grace period not above the drain time", {**BASE, "terminationGracePeriodSeconds": 30}, "must exceed config.drainSeconds"),
    ("TLS without a certificate Secret", {**BASE, "tls": {"enabled": True}}, "tls.existingSecret"),
    ("ServiceMonitor without metrics", {**BASE, "metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}}, "needs metrics.enabled"),
    ("string where a number belongs", {**BASE, "replicaCount": "2"}, "replicaCount"),
]

# Kinds without a Kubernetes schema: checked here field by field instead.
SERVICE_MONITOR_SPEC = {
    "jobLabel", "namespaceSelector", "selector", "endpoints", "targetLabels", "podTargetLabels",
    "sampleLimit", "targetLimit",
}
SERVICE_MONITOR_ENDPOINT = {
    "port", "targetPort", "path", "scheme", "interval", "scrapeTimeout", "honorLabels",
    "honorTimestamps", "relabelings", "metricRelabelings", "tlsConfig", "bearerTokenSecret",
    "authorization", "params", "followRedirects", "enableHttp2", "filterRunning",
}
RELABEL_CONFIG = {
    "sourceLabels", "separator", "targetLabel", "regex", "modulus", "replacement", "action",
}
RELABEL_ACTIONS = {
    "replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep", "lowercase",
    "uppercase", "keepequal", "dropequal",
}


class Failures:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, message: str) -> None:
        self.items.append(message)
        print(f"FAIL {message}")


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def load_values(name: str) -> dict[str, Any]:
    if name == "default":
        return {}
    with open(CI_DIR / f"{name}-values.yaml", encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


# --- lint and render ---------------------------------------------------------------------


def lint(helm: Any, name: str, values: dict[str, Any], kube_version: str, failures: Failures) -> None:
    report = helm.lint(str(CHART_DIR), values, strict=True, namespace=NAMESPACE,
                       kube_version=f"v{kube_version}")
    # Severity: 1 info, 2 warning, 3 error. Warnings fail too (helm lint --strict).
    serious = 0
    for message in report.get("messages", []):
        line = f"{message.get('path', '')}: {message.get('error', '').strip()}"
        if message.get("severity", 0) >= 2:
            serious += 1
            failures.add(f"lint [{name}] {line}")
        else:
            print(f"  lint note [{name}] {line}")
    if not serious:
        for error in report.get("errors", []):
            failures.add(f"lint [{name}] {error.strip()}")
    if not report.get("total_charts_linted"):
        failures.add(f"lint [{name}] no chart was linted")


def render(helm: Any, chart: Any, values: dict[str, Any]) -> dict[str, str]:
    return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def documents(rendered: dict[str, str], name: str, failures: Failures) -> list[tuple[str, dict[str, Any]]]:
    docs: list[tuple[str, dict[str, Any]]] = []
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            if "grpc.health.v1.Health/Check" not in text:
                failures.add(f"[{name}] NOTES.txt lost its health check command")
            continue
        try:
            parsed = [doc for doc in yaml.safe_load_all(text) if doc]
        except yaml.YAMLError as error:
            failures.add(f"[{name}] {template} is not valid YAML: {error}")
            continue
        for doc in parsed:
            if not isinstance(doc, dict) or not all(k in doc for k in ("apiVersion", "kind", "metadata")):
                failures.add(f"[{name}] {template}: a document lacks apiVersion, kind or metadata")
                continue
            docs.append((template, doc))
    seen: set[tuple[str, str]] = set()
    for template, doc in docs:
        resource_name = str(doc["metadata"].get("name", ""))
        # Service names are DNS labels; keep every name within that limit.
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", resource_name):
            failures.add(f"[{name}] {template}: {doc['kind']} name {resource_name!r} is not a DNS label of at most 63 characters")
        for label, value in (doc["metadata"].get("labels") or {}).items():
            if len(str(value)) > 63:
                failures.add(f"[{name}] {template}: label {label} is longer than 63 characters")
        key = (doc["kind"], doc["metadata"].get("name", ""))
        if key in seen:
            failures.add(f"[{name}] {template}: two resources named {key[0]}/{key[1]}")
        seen.add(key)
    return docs


# --- validation --------------------------------------------------------------------------


def is_crd_kind(doc: dict[str, Any]) -> bool:
    return str(doc["apiVersion"]).startswith("monitoring.coreos.com/")


def validate_core(validator: str, files: list[Path], kube_versions: list[str], name: str,
                  failures: Failures) -> None:
    for version in kube_versions:
        result = subprocess.run(
            [validator, "--strict", "--quiet", "-k", version, *map(str, files)],
            capture_output=True, text=True, check=False,
        )
        output = (result.stdout + result.stderr).strip()
        # A missing schema is only a warning to kubernetes-validate; for a core resource it
        # means a misspelt apiVersion or kind, so it fails here.
        problems = [line for line in output.splitlines() if line.startswith(("ERROR", "WARN", "FATAL"))]
        if result.returncode != 0 or problems:
            failures.add(f"[{name}] kubernetes-validate --strict -k {version}:\n    "
                         + "\n    ".join(problems or output.splitlines() or [f"exit {result.returncode}"]))
        else:
            print(f"  kubernetes-validate --strict -k {version}: {len(files)} manifests valid")


def check_relabelings(where: str, items: Any, failures: Failures) -> None:
    if not isinstance(items, list):
        failures.add(f"{where}: must be a list")
        return
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            failures.add(f"{where}[{index}]: must be an object")
            continue
        unknown = set(item) - RELABEL_CONFIG
        if unknown:
            failures.add(f"{where}[{index}]: unknown fields {sorted(unknown)}")
        action = item.get("action", "replace")
        if str(action).lower() not in RELABEL_ACTIONS:
            failures.add(f"{where}[{index}]: unknown action {action!r}")


def check_service_monitor(doc: dict[str, Any], services: list[dict[str, Any]], name: str,
                          failures: Failures) -> None:
    where = f"[{name}] ServiceMonitor/{doc['metadata'].get('name')}"
    if doc["apiVersion"] != "monitoring.coreos.com/v1" or doc["kind"] != "ServiceMonitor":
        failures.add(f"{where}: unexpected {doc['apiVersion']} {doc['kind']}")
        return
    unknown_top = set(doc) - {"apiVersion", "kind", "metadata", "spec"}
    if unknown_top:
        failures.add(f"{where}: unknown top-level fields {sorted(unknown_top)}")
    spec = doc.get("spec") or {}
    unknown = set(spec) - SERVICE_MONITOR_SPEC
    if unknown:
        failures.add(f"{where}: unknown spec fields {sorted(unknown)}")
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    if not selector:
        failures.add(f"{where}: spec.selector.matchLabels is required")
    selected = [svc for svc in services if selects(selector, svc["metadata"].get("labels") or {})]
    if not selected:
        failures.add(f"{where}: spec.selector selects no rendered Service")
    endpoints = spec.get("endpoints")
    if not isinstance(endpoints, list) or not endpoints:
        failures.add(f"{where}: spec.endpoints must be a non-empty list")
        return
    for index, endpoint in enumerate(endpoints):
        unknown = set(endpoint) - SERVICE_MONITOR_ENDPOINT
        if unknown:
            failures.add(f"{where}: endpoints[{index}] unknown fields {sorted(unknown)}")
        port = endpoint.get("port")
        if not any(port == p.get("name") for svc in selected for p in svc["spec"].get("ports", [])):
            failures.add(f"{where}: endpoints[{index}].port {port!r} is no named port of the selected Services")
        for key in ("interval", "scrapeTimeout"):
            if key in endpoint and not re.fullmatch(r"([0-9]+(ms|s|m|h))+", str(endpoint[key])):
                failures.add(f"{where}: endpoints[{index}].{key} {endpoint[key]!r} is not a duration")
        for key in ("relabelings", "metricRelabelings"):
            if key in endpoint:
                check_relabelings(f"{where}: endpoints[{index}].{key}", endpoint[key], failures)


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_wiring(docs: list[dict[str, Any]], name: str, failures: Failures) -> None:
    """Selectors and named ports that bind the resources to the Keygate pods."""
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    if len(deployments) != 1:
        failures.add(f"[{name}] expected one Deployment, found {len(deployments)}")
        return
    deployment = deployments[0]
    pod = deployment["spec"]["template"]
    pod_labels = pod["metadata"].get("labels") or {}
    if not selects(deployment["spec"]["selector"].get("matchLabels") or {}, pod_labels):
        failures.add(f"[{name}] the Deployment's selector does not match its pod labels")
    container_ports = {p.get("name"): p.get("containerPort") for c in pod["spec"]["containers"] for p in c.get("ports", [])}
    env = {e["name"]: e for c in pod["spec"]["containers"] for e in c.get("env", [])}
    drain = int(env.get("KEYGATE_DRAIN_SECONDS", {}).get("value", 30))
    if int(pod["spec"].get("terminationGracePeriodSeconds", 30)) <= drain:
        failures.add(f"[{name}] terminationGracePeriodSeconds does not exceed KEYGATE_DRAIN_SECONDS")
    for doc in docs:
        kind, resource = doc["kind"], f"{doc['kind']}/{doc['metadata']['name']}"
        if kind == "Service":
            if not selects(doc["spec"].get("selector") or {}, pod_labels):
                failures.add(f"[{name}] {resource} selects no Keygate pod")
            for port in doc["spec"].get("ports", []):
                target = port.get("targetPort")
                if isinstance(target, str) and target not in container_ports:
                    failures.add(f"[{name}] {resource} targets unknown container port {target!r}")
        elif kind in ("PodDisruptionBudget", "NetworkPolicy"):
            selector = doc["spec"]["selector" if kind == "PodDisruptionBudget" else "podSelector"]
            if not selects(selector.get("matchLabels") or {}, pod_labels):
                failures.add(f"[{name}] {resource} selects no Keygate pod")
        elif kind == "HorizontalPodAutoscaler":
            target = doc["spec"]["scaleTargetRef"]
            if (target["kind"], target["name"]) != ("Deployment", deployment["metadata"]["name"]):
                failures.add(f"[{name}] {resource} scales something other than the Deployment")
            if "replicas" in deployment["spec"]:
                failures.add(f"[{name}] the Deployment sets replicas although an HPA scales it")
        elif kind == "Job":
            hook = (doc["metadata"].get("annotations") or {}).get("helm.sh/hook", "")
            if "pre-install" not in hook:
                failures.add(f"[{name}] {resource} is not a pre-install hook")
            if env.get("KEYGATE_NO_MIGRATE", {}).get("value") != "true":
                failures.add(f"[{name}] migrations run in a Job but the replicas still migrate on start")
            # A pre-install hook runs before ordinary resources exist: whatever it reads from
            # the release must itself be an earlier hook.
            job_env = [e for c in doc["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])]
            for item in job_env:
                ref = (item.get("valueFrom") or {}).get("secretKeyRef")
                if not ref:
                    continue
                source = next((d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == ref["name"]), None)
                if source is not None:
                    annotations = source["metadata"].get("annotations") or {}
                    weight = int(annotations.get("helm.sh/hook-weight", "0"))
                    job_weight = int((doc["metadata"].get("annotations") or {}).get("helm.sh/hook-weight", "0"))
                    if "pre-install" not in annotations.get("helm.sh/hook", "") or weight >= job_weight:
                        failures.add(f"[{name}] {resource} reads Secret/{ref['name']}, which is not an earlier pre-install hook")


def check_probes(docs: list[dict[str, Any]], name: str, failures: Failures) -> None:
    """The probes ask the right health service: the kubelet's gRPC probe in plaintext, and with
    TLS on (which the kubelet's gRPC probe cannot speak) an exec probe running `keygate health`
    over TLS against the container's own gRPC port, with every file it names mounted."""
    expected_service = {"startupProbe": "", "readinessProbe": "", "livenessProbe": "liveness"}
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            where = f"[{name}] Deployment/{doc['metadata']['name']} container {container['name']}"
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            ports = {p.get("name"): p.get("containerPort") for p in container.get("ports", [])}
            mounts = [m["mountPath"].rstrip("/") + "/" for m in container.get("volumeMounts", [])]
            tls = "KEYGATE_TLS_CERT" in env
            mutual = "KEYGATE_TLS_CLIENT_CA" in env
            for probe_name, service in expected_service.items():
                probe = container.get(probe_name)
                if probe is None:
                    continue
                if not tls:
                    grpc = probe.get("grpc")
                    if grpc is None:
                        failures.add(f"{where}: {probe_name} is not a gRPC probe")
                    elif grpc.get("service") != service or grpc.get("port") != ports.get("grpc"):
                        failures.add(f"{where}: {probe_name} asks {grpc} instead of service {service!r} on the gRPC port")
                    continue
                command = (probe.get("exec") or {}).get("command")
                if not command or command[:2] != ["keygate", "health"]:
                    failures.add(f"{where}: with TLS on, {probe_name} is not an exec probe running `keygate health`: {probe}")
                    continue
                flags: dict[str, str] = {}
                for index, word in enumerate(command[2:-1], start=2):
                    if word.startswith("--"):
                        flags[word] = command[index + 1]
                if flags.get("--service") != service:
                    failures.add(f"{where}: {probe_name} asks service {flags.get('--service')!r}, not {service!r}")
                if flags.get("--server") != f"https://127.0.0.1:{ports.get('grpc')}":
                    failures.add(f"{where}: {probe_name} calls {flags.get('--server')!r}, not its own gRPC port over TLS")
                if not flags.get("--tls-server-name"):
                    failures.add(f"{where}: {probe_name} does not name the certificate's host (--tls-server-name)")
                timeout = flags.get("--timeout", "")
                if not re.fullmatch(r"[1-9][0-9]*s", timeout) or int(timeout[:-1]) > int(probe.get("timeoutSeconds", 1)):
                    failures.add(f"{where}: {probe_name} --timeout {timeout!r} is not within timeoutSeconds")
                files = ["--ca-cert"] + (["--client-cert", "--client-key"] if mutual else [])
                for flag in files:
                    path = flags.get(flag)
                    if not path:
                        failures.add(f"{where}: {probe_name} lacks {flag}")
                    elif not any(path.startswith(mount) for mount in mounts):
                        failures.add(f"{where}: {probe_name} {flag} {path} is on no volume mount")


# --- values table of the README ----------------------------------------------------------

TABLE_START = "<!-- values-table:start (generated from values.yaml by ci/check_chart.py --update-readme) -->"
TABLE_END = "<!-- values-table:end -->"


def value_descriptions() -> dict[str, str]:
    """`# -- text` comments of values.yaml, by dotted key path."""
    descriptions: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: str | None = None
    for line in (CHART_DIR / "values.yaml").read_text(encoding="utf-8").splitlines():
        comment = re.match(r"^(\s*)# -- (.*)$", line)
        if comment:
            pending = comment.group(2).strip()
            continue
        key = re.match(r"^(\s*)([A-Za-z0-9_]+):", line)
        if not key:
            continue
        indent = len(key.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [key.group(2)])
        if pending is not None:
            descriptions[path] = pending
            pending = None
        stack.append((indent, key.group(2)))
    return descriptions


def leaves(values: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> list[tuple[str, Any, dict[str, Any]]]:
    """Documented values: walk values.yaml along the schema; objects without declared
    properties (Kubernetes objects, label maps) are single values."""
    found: list[tuple[str, Any, dict[str, Any]]] = []
    for key, node in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        if path == "global":
            continue
        if "properties" in node:
            found.extend(leaves(values.get(key) or {}, node, f"{path}."))
        else:
            found.append((path, values.get(key), node))
    return found


def values_table(failures: Failures) -> str:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text(encoding="utf-8"))
    schema = json.loads((CHART_DIR / "values.schema.json").read_text(encoding="utf-8"))
    descriptions = value_descriptions()
    rows = ["| Value | Type | Default | Description |", "|---|---|---|---|"]
    documented = set()
    for path, default, node in leaves(values, schema):
        documented.add(path)
        if not has_path(values, path):
            failures.add(f"values.schema.json declares {path}, which values.yaml does not set")
        description = descriptions.get(path)
        if not description:
            failures.add(f"values.yaml: {path} has no '# --' description")
            description = ""
        kind = node.get("type", "object")
        kind = " or ".join(kind) if isinstance(kind, list) else kind
        shown = json.dumps(default, separators=(",", ":"))
        rows.append(f"| `{path}` | {kind} | `{shown}` | {description.replace('|', '&#124;')} |")
    for path in descriptions:
        if path not in documented and not any(path.startswith(f"{d}.") for d in documented):
            failures.add(f"values.yaml: {path} is described but not declared in values.schema.json")
    return "\n".join(rows)


def has_path(values: dict[str, Any], path: str) -> bool:
    node: Any = values
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def check_readme(update: bool, failures: Failures) -> None:
    table = values_table(failures) + "\n"
    text = README.read_text(encoding="utf-8")
    match = re.search(re.escape(TABLE_START) + r"\n(.*?)" + re.escape(TABLE_END), text, re.S)
    if not match:
        failures.add("README.md has no values table markers")
        return
    if match.group(1) == table:
        print("  README values table matches values.yaml")
        return
    if update:
        README.write_text(text[: match.start(1)] + table + text[match.end(1):], encoding="utf-8")
        print("  README values table rewritten")
    else:
        failures.add("README.md's values table is out of date: run "
                     "`python helm/keygate/ci/check_chart.py --update-readme`")


# --- main --------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kube-version", action="append", default=[],
                        help="Kubernetes version to validate against (repeatable)")
    parser.add_argument("--out", type=Path, help="directory for the rendered manifests")
    parser.add_argument("--validator", default=shutil.which("kubernetes-validate") or "kubernetes-validate")
    parser.add_argument("--update-readme", action="store_true", help="rewrite the README's values table")
    args = parser.parse_args()

    failures = Failures()
    print("--- README values table")
    check_readme(args.update_readme, failures)
    if args.update_readme:
        return 1 if failures.items else 0
    if not args.kube_version or args.out is None:
        parser.error("--kube-version and --out are required")

    import helm_python as helm

    print(f"--- helm engine {helm.helm_sdk_version()} (helm-python-sdk {helm.__version__})")
    chart = helm.Chart.load(str(CHART_DIR))
    print(f"chart {chart.name} {chart.version} (app {chart.metadata.get('appVersion')}, "
          f"kubeVersion {chart.metadata.get('kubeVersion')})")

    sets: list[tuple[str, str, dict[str, Any], list[str]]] = [
        (name, "chart defaults" if name == "default" else f"ci/{name}-values.yaml", load_values(name),
         args.kube_version) for name in VALUE_SETS
    ]
    for name, overlay in VARIANTS.items():
        floor = VARIANT_MIN_KUBE.get(name)
        versions = [v for v in args.kube_version if floor is None or version_key(v) >= version_key(floor)]
        sets.append((name, "chart defaults + inline variant", merge(load_values("default"), overlay),
                     versions or [args.kube_version[-1]]))

    for name, source, values, kube_versions in sets:
        print(f"--- {name} ({source})")
        lint(helm, name, values, args.kube_version[-1], failures)
        try:
            rendered = render(helm, chart, values)
        except helm.HelmError as error:
            failures.add(f"[{name}] render failed: {error}")
            continue
        docs = documents(rendered, name, failures)
        out = args.out / name
        out.mkdir(parents=True, exist_ok=True)
        core_files: list[Path] = []
        for index, (template, doc) in enumerate(docs):
            kind, resource_name = doc["kind"], doc["metadata"].get("name", "")
            hook = (doc["metadata"].get("annotations") or {}).get("helm.sh/hook")
            print(f"  {kind}/{resource_name}" + (f"  (hook: {hook})" if hook else ""))
            path = out / f"{index:02d}-{kind.lower()}-{resource_name}.yaml"
            path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
            if not is_crd_kind(doc):
                core_files.append(path)
        plain = [doc for _, doc in docs]
        services = [d for d in plain if d["kind"] == "Service"]
        for doc in plain:
            if is_crd_kind(doc):
                check_service_monitor(doc, services, name, failures)
                print(f"  {doc['kind']}/{doc['metadata']['name']}: no Kubernetes schema; "
                      "checked field by field against the Prometheus Operator API")
        validate_core(args.validator, core_files, kube_versions, name, failures)
        try:
            check_wiring(plain, name, failures)
            check_probes(plain, name, failures)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            # Malformed manifests are reported by the validation above; say where this broke.
            failures.add(f"[{name}] resources too malformed to check their wiring: {error!r}")

    print("--- values that must be refused")
    for description, values, expected in MUST_FAIL:
        try:
            render(helm, chart, values)
        except helm.HelmError as error:
            if expected in str(error):
                print(f"  refused as expected: {description}")
            else:
                failures.add(f"{description}: refused, but not with {expected!r}: {error}")
        else:
            failures.add(f"{description}: rendered without error")

    if failures.items:
        print(f"chart check: {len(failures.items)} failure(s)")
        return 1
    print("chart check: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
