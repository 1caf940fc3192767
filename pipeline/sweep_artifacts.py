"""What the Prefect UI shows of a sweep (the flow run's Artifacts tab): a markdown report (the
outcome, the failed runs with the tail of their output, the MLflow parent run, the tables) and a
table of the runs. Written from the sweep's summary and its tables folder; nothing else is read."""

from __future__ import annotations

from pathlib import Path

from prefect.artifacts import create_markdown_artifact, create_table_artifact

TABLES = ("table2.md", "table4.md")  # the comparison and MEGL's ablation: what a sweep is run for
TAIL = 20  # lines of a failed run's output in the report


def report_markdown(summary: dict, tables: Path | None, experiment: str | None, parent: str | None) -> str:
    lines = [f"# Sweep {summary['flow_run']}", "",
             f"Commit `{summary['commit'][:12]}`: {len(summary['finished'])} of {summary['runs_total']} runs finished"
             + (f", {len(summary['failed'])} failed." if summary["failed"] else "."), ""]
    if parent:
        lines += [f"MLflow: parent run `{parent}` in experiment `{experiment}`, one nested run per run of the grid "
                  "(`make mlflow-ui`, then http://127.0.0.1:5000).", ""]
    for name, error in summary["failed"].items():
        lines += [f"## Failed: {name}", "", "```", *error.splitlines()[-TAIL:], "```", ""]
    if summary.get("error"):
        lines += ["## The sweep stopped", "", "```", summary["error"], "```", ""]
    if tables is not None:
        lines += [f"Tables: `{summary['tables']}/tables` (with the params they ran: `{summary['tables']}/params.yaml`).", ""]
        for name in TABLES:
            if (tables / name).is_file():
                lines += [(tables / name).read_text().strip(), ""]
    else:
        lines += [f"No tables: {summary.get('tables_error', 'the sweep stopped before its gather')}.", ""]
    return "\n".join(lines)


def run_rows(summary: dict, runs: list[str]) -> list[dict]:
    """One row per run of the grid: finished, failed (with its output's last line), or not run."""
    rows = []
    for name in runs:
        if name in summary["finished"]:
            rows.append({"run": name, "state": "finished", "detail": ""})
        elif name in summary["failed"]:
            last = [line for line in summary["failed"][name].splitlines() if line.strip()]
            rows.append({"run": name, "state": "failed", "detail": last[-1] if last else ""})
        else:
            rows.append({"run": name, "state": "not run", "detail": ""})
    return rows


def publish(summary: dict, runs: list[str], tables: Path | None, experiment: str | None, parent: str | None) -> None:
    create_markdown_artifact(markdown=report_markdown(summary, tables, experiment, parent), key="megl-sweep-report",
                             description=f"sweep {summary['flow_run']}: outcome, failures, tables")
    create_table_artifact(table=run_rows(summary, runs), key="megl-sweep-runs",
                          description=f"sweep {summary['flow_run']}: every run of its grid")
