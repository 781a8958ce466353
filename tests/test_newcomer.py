"""A newcomer's first ten minutes, for real: the embedded default (SQLite, in-process tasks, no
PostgreSQL or Redis) seeded and served by ``runserver``; then ``make demo``'s walkthrough and every
curl example of docs/guides run against it over HTTP."""

import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUIDES = ROOT / "docs" / "guides"
ORDER = ["custodian.md", "researcher.md", "dac.md", "output-checker.md", "auditor.md"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


embedded_server_env: list = []


@pytest.fixture(scope="module")
def embedded_server():
    tmp = Path(tempfile.mkdtemp(prefix="tre-embedded-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "CELERY_", "TRE_", "CACHE_URL"))}
    env.update({"DATABASE_URL": f"sqlite:///{tmp / 'tre.sqlite3'}", "TRE_STORE_DIR": str(tmp / "store"), "PYTHONUNBUFFERED": "1"})
    manage = [sys.executable, "manage.py"]
    subprocess.run(manage + ["migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True, timeout=300)
    seed = subprocess.run(manage + ["tre_demo_seed", "--rows", "20000"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert seed.returncode == 0, seed.stdout[-3000:] + seed.stderr[-3000:]
    assert "Demo users" in seed.stdout and "rita" in seed.stdout
    port = _free_port()
    log = open(tmp / "server.log", "w")
    server = subprocess.Popen(manage + ["runserver", "--noreload", f"127.0.0.1:{port}"], cwd=ROOT, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(base + "/healthz", timeout=2).read()
            break
        except Exception:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail("the embedded server did not start:\n" + (tmp / "server.log").read_text()[-3000:])
            time.sleep(0.3)
    embedded_server_env[:] = [env]
    yield base
    server.terminate()
    server.wait(timeout=20)
    log.close()


def test_seed_is_idempotent(embedded_server):
    import json

    again = subprocess.run([sys.executable, "manage.py", "tre_demo_seed"], cwd=ROOT, env=embedded_server_env[0],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Seeding" not in again.stdout and "Demo users" in again.stdout
    body = json.loads(urllib.request.urlopen(embedded_server + "/api/v1/register/", timeout=10).read())
    titles = [p["title"] for p in body["results"]]
    assert titles.count("Long-term conditions by region (demo)") == 1


def test_make_demo_walkthrough_succeeds(embedded_server):
    r = subprocess.run([sys.executable, "-m", "tre.demo.walkthrough", "--base-url", embedded_server], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "The whole lifecycle worked" in r.stdout
    for milestone in ("DAC member dina approves", "checker otto approves", "downloads the released table",
                      "registers an opt-out", "verifies the hash chain"):
        assert milestone in r.stdout


def _bash_blocks(path: Path) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S)


def _script(guide: str) -> str:
    """The guide's bash blocks, after the shared set-up; `# → NNN` lines must print that status."""
    parts = ["set -euo pipefail"] + _bash_blocks(GUIDES / "README.md") + _bash_blocks(GUIDES / guide)
    text = "\n".join(parts)
    return re.sub(r"\s+# → (\d{3})$", r' | { read code; [ "$code" = "\1" ] || { echo "expected \1, got $code" >&2; exit 1; }; }',
                  text, flags=re.M)


@pytest.mark.parametrize("guide", ORDER)
def test_every_curl_example_in_the_guides_works(embedded_server, guide):
    script = _script(guide)
    assert script.count("curl") >= 3
    r = subprocess.run(["bash", "-c", script], env={**os.environ, "TRE_BASE": embedded_server},
                       input="", capture_output=True, text=True, timeout=300,
                       cwd=ROOT)
    assert r.returncode == 0, f"{guide}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"


def test_every_guide_is_exercised():
    assert sorted(ORDER) == sorted(p.name for p in GUIDES.glob("*.md") if p.name != "README.md")
