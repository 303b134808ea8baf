"""``doctor`` on a ``redis+cluster://`` URL: the cluster's slot coverage, then
each primary examined as a server of its own (its persistence, memory,
replicas and madsci keys), since every primary holds part of the state."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

from madsci_cache_rs import PyCacheHandler
from madsci_cache_rs.doctor import (
    DANGER,
    EXIT_DANGER,
    EXIT_OK,
    Finding,
    Report,
    _text,
    examine,
    render,
)

SLOTS = 16384
# `[user[:password]@]hosts` then the path and query: the hosts are replaced.
_URL = re.compile(r"^(?P<scheme>[^:]+)://(?P<user>[^/?#]*@)?(?P<hosts>[^/?#]*)(?P<tail>.*)$")


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0].lower().endswith("+cluster")


def node_url(url: str, host: str, port: int) -> str:
    """``url`` (a cluster URL) for one of its nodes, every option kept."""
    m = _URL.match(url)
    if m is None:
        raise ValueError("not a cluster URL")
    scheme = m["scheme"].lower().removesuffix("+cluster")
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"{scheme}://{m['user'] or ''}{where}{m['tail']}"


def primaries(handler: PyCacheHandler) -> tuple[list[tuple[str, int]], int]:
    """The primaries ``CLUSTER SLOTS`` names (in slot order) and how many
    slots have one."""
    found: list[tuple[str, int]] = []
    covered = 0
    for entry in handler._command("CLUSTER", "SLOTS"):
        first, last, node = entry[0], entry[1], entry[2]
        covered += last - first + 1
        address = (_text(node[0]), int(node[1]))
        if address not in found:
            found.append(address)
    return found, covered


@dataclass
class ClusterReport:
    url: str
    primaries: list[str] = field(default_factory=list)
    slots_covered: int = 0
    nodes: list[Report] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def exit_status(self) -> int:
        own = EXIT_DANGER if any(f.level == DANGER for f in self.findings) else EXIT_OK
        return max([own, *(n.exit_status for n in self.nodes)])


def examine_cluster(
    url: str, handler: PyCacheHandler, *, pings: int, max_keys: int, wait: float
) -> ClusterReport:
    """The cluster's coverage from ``handler``, then each primary through a
    handler of its own (``url``'s options, its address). Raises our errors."""
    nodes, covered = primaries(handler)
    report = ClusterReport(url=handler.url, slots_covered=covered)
    report.primaries = [f"{h}:{p}" for h, p in nodes]
    if covered < SLOTS:
        report.findings.append(
            Finding(
                DANGER,
                f"Only {covered} of the {SLOTS} slots have a primary: keys in the others "
                "cannot be read or written (CLUSTERDOWN).",
            )
        )
    for host, port in nodes:
        one = PyCacheHandler.from_url(
            node_url(url, host, port), client_cache=False, retry_window=wait
        )
        try:
            report.nodes.append(examine(one, pings=pings, max_keys=max_keys, in_cluster=True))
        finally:
            one.close()
    return report


def render_cluster(report: ClusterReport) -> str:
    out = [f"madsci-cache-rs doctor: {report.url}", ""]
    out.append(
        f"cluster      {len(report.primaries)} primaries ({', '.join(report.primaries)}); "
        f"{report.slots_covered} of {SLOTS} slots served"
    )
    for f in report.findings:
        out.append(f"{'DANGER  ' if f.level == DANGER else 'WARNING '}{f.text}")
    for node in report.nodes:
        out += ["", *render(node).splitlines()]
    verdict = (
        "NOT SAFE for live madsci state" if report.exit_status else "no dangerous setting found"
    )
    out += ["", f"cluster verdict: {verdict}; exit {report.exit_status}"]
    return "\n".join(out)


def cluster_json(report: ClusterReport) -> str:
    data = asdict(report)
    data["nodes"] = [{**asdict(n), "exit_status": n.exit_status} for n in report.nodes]
    data["exit_status"] = report.exit_status
    return json.dumps(data, indent=2, sort_keys=True)
