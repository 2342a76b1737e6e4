"""The README's `curl` lines, copied as a shop developer would, against a served service over loopback.

The README's "Call the API" section shows `curl` against `make demo` and a trimmed real `/search` response.
Here the same lines run against the tiny test world (tests/service/conftest.py) served by uvicorn on a free
loopback port, with the demo's host, port and photo path substituted; the response must have the keys the
README's sample shows, at the top level and in each result.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.service.conftest import Tiny, settings_for, uvicorn_server

ROOT = Path(__file__).resolve().parents[2]
DEMO_BASE = "http://127.0.0.1:8000"


def api_section() -> str:
    """The README's section on calling the API, up to the next second-level heading."""
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## Call the API")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def fenced(section: str, *languages: str) -> list[str]:
    """The bodies of the fenced code blocks of these languages, in order."""
    pattern = r"```(" + "|".join(languages) + r")\n(.*?)```"
    return [m.group(2) for m in re.finditer(pattern, section, re.S)]


def curl_lines() -> list[str]:
    lines = [line.strip() for block in fenced(api_section(), "bash", "sh") if "curl" in block
             for line in block.splitlines()]
    return [line for line in lines if line.startswith("curl ")]


def sample_response() -> dict:
    blocks = fenced(api_section(), "json")
    assert blocks, "the README's API section shows no sample JSON response"
    return json.loads(blocks[0])


def test_the_readme_shows_curl_for_search_and_generate() -> None:
    routes = {re.search(r"/(search|generate)\b", line).group(1) for line in curl_lines()
              if re.search(r"/(search|generate)\b", line)}
    assert routes == {"search", "generate"}
    assert all(DEMO_BASE in line for line in curl_lines())
    assert sample_response()["results"], "the sample response shows no result"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_readme_curl_lines_work_against_a_served_service(tiny: Tiny, tmp_path: Path) -> None:
    sample = sample_response()
    photo = sorted(tiny.samples.iterdir())[0]  # a street photo, as demo/samples holds
    with uvicorn_server(settings_for(tiny)) as base:
        for line in curl_lines():
            argv = shlex.split(line.replace(DEMO_BASE, base))
            argv = [re.sub(r"^image=@.*$", f"image=@{photo}", a) for a in argv]  # the photo path of this world
            if "-o" in argv:
                argv[argv.index("-o") + 1] = str(tmp_path / argv[argv.index("-o") + 1])
            done = subprocess.run(argv + ["--fail-with-body", "--max-time", "30"], capture_output=True,
                                  timeout=60, cwd=tmp_path)
            assert done.returncode == 0, (line, done.stdout, done.stderr)
            if line.rstrip().endswith("/search"):
                body = json.loads(done.stdout)
                assert set(body) == set(sample), line
                assert body["results"], line
                assert all(set(hit) == set(sample["results"][0]) for hit in body["results"]), line
                assert "total" in body["timings_ms"]
                k = int(next(a.split("=", 1)[1] for a in argv if a.startswith("k=")))
                assert len(body["results"]) == min(k, len(tiny.product_ids))
            elif "/generate" in line:
                written = tmp_path / argv[argv.index("-o") + 1]
                assert written.read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), line
