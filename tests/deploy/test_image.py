"""The container image: its Dockerfile is linted and agrees with the CLI, and what it installs is complete.

Where a Docker engine runs, the image is also built and started read-only as its non-root user.
"""

import json
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from herald.stack import APPS
from tests.deploy.manifests import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    found: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += line.removesuffix("\\").strip() + " "
        if not line.endswith("\\"):
            keyword, _, rest = pending.strip().partition(" ")
            found.append((keyword.upper(), rest.strip()))
            pending = ""
    return found


def stages() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(every step before the final FROM, the final stage's steps)."""
    steps = instructions()
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[:last_from], steps[last_from:]


def final_stage() -> list[tuple[str, str]]:
    return stages()[1]


def arg_default(name: str) -> str:
    for keyword, rest in instructions():
        if keyword == "ARG" and rest.startswith(f"{name}="):
            return rest.split("=", 1)[1]
    raise AssertionError(f"ARG {name} has no default")


def test_hadolint_finds_nothing() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    done = subprocess.run([str(hadolint), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_multi_stage_on_slim_python_with_dependencies_in_their_own_layer() -> None:
    steps = instructions()
    assert sum(keyword == "FROM" for keyword, _ in steps) >= 2
    assert "slim" in arg_default("PYTHON_IMAGE")
    build = stages()[0]
    copies = [r for k, r in build if k == "COPY"]
    installs = [i for i, (k, r) in enumerate(build) if k == "RUN" and "pip install" in r]
    first_source_copy = next(i for i, (k, r) in enumerate(build) if k == "COPY" and r.startswith("kernel"))
    assert copies[0].startswith("pyproject.toml"), "dependencies must be installed from pyproject.toml alone first"
    assert installs[0] < first_source_copy, "the dependency layer must not depend on the source"
    for keyword, rest in build:
        if keyword == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: no such path"


def test_runs_as_a_non_root_user_with_nothing_written_at_run_time() -> None:
    stage = dict(final_stage())
    user = stage["USER"].replace("${HERALD_UID}", arg_default("HERALD_UID"))
    assert user.isdigit() and int(user) != 0, "a numeric non-root USER lets runAsNonRoot verify it"
    env = stage["ENV"]
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "HOME=/tmp" in env
    assert any("compileall" in r for k, r in instructions() if k == "RUN"), "bytecode is compiled at build time"


def test_entrypoint_is_the_cli_and_the_default_command_names_a_service() -> None:
    stage = dict(final_stage())
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    entrypoint = json.loads(stage["ENTRYPOINT"])
    assert entrypoint == ["herald"] and scripts["herald"] == "herald.cli:app"
    command = json.loads(stage["CMD"])
    assert command[0] == "serve" and command[1] in APPS


def test_dockerignore_keeps_tests_data_and_caches_out() -> None:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*", "start from nothing and allow only what the image needs"
    allowed = {rule[1:].strip("/") for rule in rules if rule.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "kernel", "gateway", "services", "herald"}
    copied = {r.split()[0] for k, r in instructions() if k == "COPY" and not r.startswith("--from")}
    assert copied <= allowed, f"the Dockerfile copies what .dockerignore leaves out: {copied - allowed}"


def test_the_wheel_the_image_installs_carries_migrations_and_the_cli(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("herald-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "kernel/migrations/env.py" in names and "kernel/migrations/script.py.mako" in names
    for package in ("gateway", "services/profiles", "services/segmenter", "services/scheduler", "services/dispatcher"):
        assert any(n.startswith(f"{package}/migrations/0") for n in names), f"{package} migrations missing"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "herald = herald.cli:app" in zipfile.ZipFile(wheel).read(entry_points).decode()
    assert not any(n.startswith("tests/") for n in names)


def _docker_engine() -> bool:
    docker = shutil.which("docker")
    return bool(docker) and subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode == 0  # type: ignore[list-item]


@pytest.mark.skipif(not _docker_engine(), reason="no Docker engine on this machine: the image was not built")
def test_image_builds_and_runs_read_only_as_its_user() -> None:
    tag = "herald:test"
    build = subprocess.run(["docker", "build", "-t", tag, str(ROOT)], capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stderr[-4000:]
    run = subprocess.run(
        shlex.split(f"docker run --rm --read-only --tmpfs /tmp --cap-drop ALL {tag} serve --help"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0 and "Run one service" in run.stdout, run.stderr
