"""The dashboards type-check against Grafana's own generated types: npm `@grafana/schema`
(the release matching the Grafana we target) and `tsc --noEmit`.

Each dashboard's JSON is inlined as typed object literals, so TypeScript's excess-property checks
catch a field Grafana does not know and its types catch a wrong value: the dashboard as
`Dashboard`, every panel's options and custom field config as its plugin's `Options` and
`FieldConfig`, every query as a `DataQuery` with the SQL data source's fields. Grafana's string
enums are compared by value (`Loose<T>`): the JSON holds "absolute", not ThresholdsMode.Absolute.

The npm packages are installed by this module's setup into build/ (gitignored), pinned; without
npm on the machine the test is skipped, and a failing install fails it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pusat.grafana import dashboards

ROOT = Path(__file__).resolve().parent.parent
NPM_DIR = ROOT / "build" / "npm"
SCHEMA = {"@grafana/schema": "11.6.16", "typescript": "5.9.3"}

# panel type -> (module under @grafana/schema/dist/esm/raw/composable, has a FieldConfig type)
PANELS = {
    "geomap": ("geomap/panelcfg/x/GeomapPanelCfg_types.gen", False),
    "stat": ("stat/panelcfg/x/StatPanelCfg_types.gen", False),
    "bargauge": ("bargauge/panelcfg/x/BarGaugePanelCfg_types.gen", False),
    "table": ("table/panelcfg/x/TablePanelCfg_types.gen", True),
    "timeseries": ("timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen", True),
    "state-timeline": ("statetimeline/panelcfg/x/StateTimelinePanelCfg_types.gen", True),
}


def npm_install(folder: Path, packages: dict[str, str]) -> Path:
    """Install pinned npm packages into ``folder`` (once: kept while the pins match)."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed (Node 20 and npm run this check)")
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"name": "pusat-checks", "private": True, "dependencies": packages}
    lock = folder / "installed.json"
    if lock.exists() and json.loads(lock.read_text()) == manifest:
        return folder / "node_modules"
    (folder / "package.json").write_text(json.dumps(manifest, indent=2))
    out = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", "--save-exact"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "npm_config_update_notifier": "false"},
    )
    assert out.returncode == 0, f"npm install {packages} failed:\n{out.stdout}\n{out.stderr}"
    lock.write_text(json.dumps(manifest))
    return folder / "node_modules"


@pytest.fixture(scope="module")
def node_modules() -> Iterator[Path]:
    yield npm_install(NPM_DIR, SCHEMA)


PRELUDE = """\
import type { AnnotationQuery, Dashboard, DataQuery, Panel, VariableModel } from '@grafana/schema';
{imports}

// Grafana's string enums by value: the JSON holds "absolute", not ThresholdsMode.Absolute.
type Loose<T> = T extends string
  ? `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends ReadonlyArray<infer U>
      ? Array<Loose<U>>
      : T extends object
        ? { [K in keyof T]: Loose<T[K]> }
        : T;

// The PostgreSQL data source's query (code mode), and the built-in annotation store's filter.
interface SqlQuery extends DataQuery {
  rawSql: string;
  format: 'table' | 'time_series';
  rawQuery: boolean;
  editorMode: 'code' | 'builder';
}
interface TagFilter extends DataQuery {
  limit: number;
  matchAny: boolean;
  tags: string[];
  type: string;
}
interface SqlAnnotation extends SqlQuery, TagFilter {}
"""


def _ts(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def typescript(uid: str, board: dict[str, Any]) -> str:
    """The dashboard as typed TypeScript constants."""
    d = json.loads(json.dumps(board))
    imports = "\n".join(
        f"import type * as {t.replace('-', '_')} from"
        f" '@grafana/schema/dist/esm/raw/composable/{module}';"
        for t, (module, _) in PANELS.items()
    )
    out = [PRELUDE.replace("{imports}", imports)]
    annotations = d["annotations"]["list"]
    for i, a in enumerate(annotations):
        kind = "SqlAnnotation" if "rawSql" in a.get("target", {}) else "TagFilter"
        out.append(f"const annotation{i}: Loose<AnnotationQuery<{kind}>> = {_ts(a)};")
    d["annotations"]["list"] = f"@@[{', '.join(f'annotation{i}' for i in range(len(annotations)))}]"
    for i, v in enumerate(d["templating"]["list"]):
        out.append(f"const variable{i}: Loose<VariableModel> = {_ts(v)};")
    d["templating"]["list"] = (
        f"@@[{', '.join(f'variable{i}' for i in range(len(d['templating']['list'])))}]"
    )
    names = []
    for p in d["panels"]:
        n = f"panel{p['id']}"
        assert p["type"] in PANELS, f"{uid}: no schema module for panel type {p['type']}"
        ns = p["type"].replace("-", "_")
        out.append(f"const {n}_targets: Array<Loose<SqlQuery>> = {_ts(p['targets'])};")
        if "options" in p:
            out.append(f"const {n}_options: Loose<{ns}.Options> = {_ts(p['options'])};")
        custom = p.get("fieldConfig", {}).get("defaults", {}).get("custom")
        if custom is not None:
            assert PANELS[p["type"]][1], f"{uid}: {p['type']} has no FieldConfig type"
            out.append(f"const {n}_custom: Loose<{ns}.FieldConfig> = {_ts(custom)};")
        p["targets"] = f"@@{n}_targets"
        if "options" in p:
            p["options"] = f"@@{n}_options"
        out.append(f"const {n}: Loose<Panel> = {_ts(p)};")
        names.append(n)
    d["panels"] = f"@@[{', '.join(names)}]"
    out.append(f"export const dashboard: Loose<Dashboard> = {_ts(d)};")
    # "@@name" strings stand for the typed constants above
    return re.sub(r'"@@([^"]*)"', r"\1", "\n\n".join(out))


def test_dashboards_type_check_against_grafana_schema(node_modules: Path) -> None:
    folder = NPM_DIR / "check"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    files = []
    for uid, board in dashboards.dashboards().items():
        path = folder / f"{uid}.ts"
        path.write_text(typescript(uid, board))
        files.append(path.name)
    (folder / "tsconfig.json").write_text(
        json.dumps(
            {
                "compilerOptions": {
                    "strict": True,
                    "noEmit": True,
                    "target": "es2020",
                    "module": "commonjs",
                    "moduleResolution": "node",
                    "skipLibCheck": False,
                    "types": [],
                    "typeRoots": [str(node_modules / "@types")],
                },
                "files": files,
            },
            indent=2,
        )
    )
    tsc = node_modules / "typescript" / "bin" / "tsc"
    out = subprocess.run(
        ["node", str(tsc), "-p", str(folder)], cwd=NPM_DIR, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_check_catches_a_field_grafana_does_not_know(node_modules: Path) -> None:
    """The check is not vacuous: a misspelt option and a wrong enum value fail it."""
    folder = NPM_DIR / "negative"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    board = json.loads(json.dumps(dashboards.dashboards()["pusat-city"]))
    board["panels"][0]["options"]["tooltip"]["mode"] = "sometimes"
    board["panels"][1]["options"]["colourMode"] = "background"
    board["graphTooltip"] = "crosshair"
    (folder / "bad.ts").write_text(typescript("bad", board))
    (folder / "tsconfig.json").write_text(
        json.dumps(
            {
                "compilerOptions": {
                    "strict": True, "noEmit": True, "target": "es2020", "module": "commonjs",
                    "moduleResolution": "node", "types": [],
                },
                "files": ["bad.ts"],
            }
        )
    )  # fmt: skip
    tsc = node_modules / "typescript" / "bin" / "tsc"
    out = subprocess.run(["node", str(tsc), "-p", str(folder)], capture_output=True, text=True)
    assert out.returncode != 0
    errors = out.stdout
    assert '"sometimes"' in errors
    assert "colourMode" in errors
    assert "DashboardCursorSync" in errors
