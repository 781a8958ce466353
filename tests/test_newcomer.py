"""A newcomer's first ten minutes, for real: the embedded default (SQLite, in-process tasks, no
PostgreSQL or Redis) seeded and served by ``runserver``; then ``make demo``'s walkthrough and every
curl example of docs/guides run against it over HTTP."""

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.servers import ROOT, live_server

GUIDES = ROOT / "docs" / "guides"
ORDER = ["custodian.md", "researcher.md", "dac.md", "output-checker.md", "auditor.md"]


@pytest.fixture(scope="module")
def embedded():
    with live_server() as (base, env):
        yield base, env


def test_seed_prints_how_to_log_in_and_is_idempotent(embedded):
    base, env = embedded
    assert "Demo users" in env["TRE_SEED_OUTPUT"] and "rita" in env["TRE_SEED_OUTPUT"]
    again = subprocess.run([sys.executable, "manage.py", "tre_demo_seed"], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Seeding" not in again.stdout and "Demo users" in again.stdout
    body = json.loads(urllib.request.urlopen(base + "/api/v1/register/", timeout=10).read())
    assert [p["title"] for p in body["results"]].count("Long-term conditions by region (demo)") == 1


def test_docs_and_health_are_served(embedded):
    base, _ = embedded
    assert urllib.request.urlopen(base + "/api/docs/", timeout=10).status == 200
    health = json.loads(urllib.request.urlopen(base + "/healthz", timeout=10).read())
    assert (health["database"], health["broker"], health["store"], health["mode"]) == ("ok", "ok", "ok", "embedded")


def test_make_demo_walkthrough_succeeds(embedded):
    base, _ = embedded
    r = subprocess.run([sys.executable, "-m", "demo.walkthrough", "--base-url", base], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "The whole lifecycle worked" in r.stdout
    for milestone in ("DAC member dina approves", "checker otto approves", "downloads the released table",
                      "registers an opt-out", "verifies the hash chain"):
        assert milestone in r.stdout


def test_make_demo_fails_loudly_without_a_server():
    from tests.servers import free_port

    r = subprocess.run([sys.executable, "-m", "demo.walkthrough", "--base-url", f"http://127.0.0.1:{free_port()}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Is `make run` running?" in r.stderr


def _bash_blocks(path: Path) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S)


def _script(guide: str) -> str:
    """The guide's bash blocks, after the shared set-up; `# → NNN` lines must print that status."""
    text = "\n".join(["set -euo pipefail"] + _bash_blocks(GUIDES / "README.md") + _bash_blocks(GUIDES / guide))
    return re.sub(r"\s+# → (\d{3})$", r' | { read code; [ "$code" = "\1" ] || { echo "expected \1, got $code" >&2; exit 1; }; }',
                  text, flags=re.M)


@pytest.mark.parametrize("guide", ORDER)
def test_every_curl_example_in_the_guides_works(embedded, guide):
    base, _ = embedded
    script = _script(guide)
    assert script.count("curl") >= 3
    r = subprocess.run(["bash", "-c", script], env={**os.environ, "TRE_BASE": base}, input="", capture_output=True,
                       text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, f"{guide}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"


def test_every_guide_is_exercised():
    assert sorted(ORDER) == sorted(p.name for p in GUIDES.glob("*.md") if p.name != "README.md")
