"""The Grafana dashboard of deploy/grafana (issue #18, live view for operators).

Every PromQL expression of the dashboard must name metrics that the service really
exports: the collectors registered by ``realtime.ops.metrics`` in prometheus_client's
default registry (the registry ``/metrics`` serves), which also holds the library's
default process, platform and GC collectors. Labels filtered or grouped on must be
labels of those metrics (or Prometheus' target labels). The JSON must also be a
dashboard Grafana's file provider loads: a uid, unique panel ids, a Prometheus
datasource on every panel and target.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

import realtime.ops.metrics as service_metrics

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "realtime.json"
DATASOURCES = REPO / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"

# The samples a metric family of each type exposes (the exposition format's suffixes).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}
# Labels Prometheus adds to every scraped sample, and the bucket label of histograms.
TARGET_LABELS = frozenset({"instance", "job"})
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "inf", "nan"})
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"(?:[^\"\\]|\\.)*\"")
IDENTIFIER = re.compile(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")


def exported_samples() -> dict[str, str]:
    """Sample name -> its family's name, for every family the default registry serves."""
    samples: dict[str, str] = {}
    for family in REGISTRY.collect():
        for suffix in SUFFIXES[family.type]:
            samples[family.name + suffix] = family.name
        for sample in family.samples:
            samples[sample.name] = family.name
    return samples


def declared_labels() -> dict[str, frozenset[str]]:
    """Family name -> label names, read from the Counter/Gauge/Histogram calls of the metrics module."""
    source = Path(service_metrics.__file__).read_text()
    labels: dict[str, frozenset[str]] = {}
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        if node.func.id not in {"Counter", "Gauge", "Histogram", "Summary"}:
            continue
        name = ast.literal_eval(node.args[0])
        names: list[str] = list(ast.literal_eval(node.args[2])) if len(node.args) > 2 else []
        for keyword in node.keywords:
            if keyword.arg == "labelnames":
                names = list(ast.literal_eval(keyword.value))
        labels[name] = frozenset(names)
    return labels


def strip_strings(expr: str) -> str:
    return re.sub(r"\"(?:[^\"\\]|\\.)*\"", '""', expr)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions and keywords left out)."""
    text = GROUPING.sub(" ", expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = strip_strings(text)
    names = set()
    for match in IDENTIFIER.finditer(text):
        word, call = match.group(1), match.group(2)
        if call is None and word.lower() not in KEYWORDS:
            names.add(word)
    return names


def selector_labels(expr: str) -> Iterator[tuple[str | None, str]]:
    """(metric or None, label) for every label matcher in a selector."""
    for selector in SELECTOR.finditer(expr):
        for matcher in MATCHER.finditer(selector.group(2)):
            yield selector.group(1), matcher.group(1)


def grouping_labels(expr: str) -> set[str]:
    return {label.strip() for group in GROUPING.findall(expr) for label in group.split(",") if label.strip()}


def label_values_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for variable in dashboard["templating"]["list"]:
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = re.fullmatch(r"label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)", text)
        assert match is not None, f"variable {variable['name']}: not a label_values query: {text}"
        yield match.group(1), match.group(2)


def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (f"{panel['title']}/{target['refId']}", target["expr"])
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    ]


def test_extractor_finds_metrics_and_skips_functions_labels_and_durations() -> None:
    """The extractor itself: a metric per selector, no function, keyword, label or duration."""
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{instance=~"$instance", job="x"}[$__rate_interval])))'
        " / ignoring(code) b_total offset 5m > bool 0 and on(instance) c"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}
    assert grouping_labels(expr) == {"le", "code", "instance"}
    assert set(selector_labels(expr)) == {("a_bucket", "instance"), ("a_bucket", "job")}


def test_every_dashboard_expression_names_an_exported_metric() -> None:
    """Issue #18: each target's PromQL selects only metrics the service's registry exports."""
    exported = exported_samples()
    dashboard = load_dashboard()
    queries = expressions(dashboard)
    assert len(queries) >= 15
    used: set[str] = set()
    for where, expr in queries:
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr}"
        missing = names - exported.keys()
        assert not missing, f"{where}: {sorted(missing)} not exported by realtime.ops.metrics or the default collectors"
        used |= names
    for metric, _label in label_values_queries(dashboard):
        assert metric_names(metric) <= exported.keys(), f"template variable over unknown metric {metric}"
    # The dashboard covers every family the service defines (a new metric gets a panel).
    service_families = set(declared_labels())
    assert service_families <= {exported[name] for name in used}


def test_every_label_in_the_dashboard_belongs_to_its_metrics() -> None:
    """Filters and groupings use labels the metrics carry, or the target labels instance and job."""
    exported = exported_samples()
    labels = declared_labels()

    def allowed(sample: str) -> frozenset[str]:
        family = exported[sample]
        extra = {"le"} if sample.endswith("_bucket") else set()
        return labels.get(family, frozenset()) | TARGET_LABELS | extra

    dashboard = load_dashboard()
    for where, expr in expressions(dashboard):
        for metric, label in selector_labels(expr):
            assert metric is not None, f"{where}: selector without a metric name in {expr}"
            assert label in allowed(metric), f"{where}: {metric} has no label {label}"
        in_scope = frozenset().union(*(allowed(name) for name in metric_names(expr)))
        unknown = grouping_labels(expr) - in_scope
        assert not unknown, f"{where}: grouping on {sorted(unknown)}, not labels of {sorted(metric_names(expr))}"
    for metric, label in label_values_queries(dashboard):
        assert label in allowed(metric), f"template variable: {metric} has no label {label}"


def test_dashboard_structure_loads_in_grafana() -> None:
    """uid and title, unique panel ids, a grid position in 24 columns, the provisioned datasource everywhere."""
    dashboard = load_dashboard()
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", dashboard["uid"])
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    datasource_uid = re.search(r"^\s*uid:\s*(\S+)\s*$", DATASOURCES.read_text(), re.MULTILINE)
    assert datasource_uid is not None
    expected = {"type": "prometheus", "uid": datasource_uid.group(1)}
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert 0 <= grid["x"] < grid["x"] + grid["w"] <= 24, panel["title"]
        assert min(grid["h"], grid["y"] + 1) >= 1, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["title"], f"panel {panel['id']} needs a title"
        assert panel.get("description"), f"panel {panel['title']} needs a description"
        assert panel["datasource"] == expected, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == expected, panel["title"]
            assert target["expr"].strip(), panel["title"]
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"] == expected


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("sum(rate(realtime_closes_total[5m]))", {"realtime_closes_total"}),
        ("process_resident_memory_bytes", {"process_resident_memory_bytes"}),
        ("min(realtime_broker_up) or vector(0)", {"realtime_broker_up"}),
    ],
)
def test_extractor_cases(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_a_metric_the_service_does_not_export_is_caught() -> None:
    """Negative control: a misspelled name (no _total on a counter) is not in the exported set."""
    exported = exported_samples()
    assert "realtime_closes" not in exported
    assert "realtime_closes_total" in exported
    assert "process_cpu_seconds_total" in exported
