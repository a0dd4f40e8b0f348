"""The container image: the Dockerfile and .dockerignore always (cheap parsing), and a real build
and run when a Docker daemon and the base image are available locally (skipped otherwise, with the
reason). The run checks the auth rule, /health, Docker's own HEALTHCHECK and the non-root user."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.serving import wait_for

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
AUTH = "ops:container-pw"
# Where the real build takes torch from (the small CPU wheels unless told otherwise).
TORCH_INDEX = os.environ.get("VLA_DEMO_TEST_TORCH_INDEX_URL", "https://download.pytorch.org/whl/cpu")


# ----------------------------------------------------------------------------- parsing helpers


def instructions(text: str) -> list[tuple[str, str]]:
    """``(KEYWORD, arguments)`` per Dockerfile instruction (continuations joined, comments dropped)."""
    lines, out, pending = text.splitlines(), [], ""
    for line in lines:
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def build_args(instrs) -> dict[str, str]:
    return dict(args.split("=", 1) for kw, args in instrs if kw == "ARG" and "=" in args)


def exec_form(args: str) -> list[str]:
    """An instruction's JSON exec form (``["python", "app.py", ...]``) or its shell words."""
    return json.loads(args) if args.startswith("[") else shlex.split(args)


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``path`` (relative, '/'-separated) out of the build context: the last
    matching pattern wins; a pattern matching a parent folder excludes everything beneath it."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.strip().strip("/")
        if pattern.startswith("**/"):
            variants = [pattern, pattern[3:]]
        else:
            variants = [pattern]
        if any(fnmatch.fnmatchcase(c, v) or fnmatch.fnmatchcase(c, v.replace("**/", "*/"))
               for c in candidates for v in variants):
            ignored = not negate
    return ignored


def ignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]


# ----------------------------------------------------------------------------- always


def test_dockerfile_has_the_required_pieces():
    instrs = instructions(DOCKERFILE.read_text(encoding="utf-8"))
    kws = [kw for kw, _ in instrs]
    args = build_args(instrs)
    first_from = kws.index("FROM")
    assert ("ARG", "BASE_IMAGE=python:3.11-slim") in instrs[:first_from], "the base image is a build ARG before FROM"
    assert instrs[first_from][1] in ("${BASE_IMAGE}", "$BASE_IMAGE")
    assert args.get("TORCH_INDEX_URL", "").startswith("https://pypi.org/"), "torch index: a build ARG, PyPI default"
    runs = " ".join(a for kw, a in instrs if kw == "RUN")
    assert re.search(r'--index-url "?\$\{?TORCH_INDEX_URL', runs) and "torch==" in runs
    assert re.search(r"pip install -r requirements\.txt -c constraints\.txt", runs)
    torch_pin = [line for line in (REPO / "requirements.txt").read_text().splitlines() if line.startswith("torch==")]
    assert len(torch_pin) == 1, "the image installs torch at the version requirements.txt pins"
    users = [a for kw, a in instrs if kw == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the app must not run as root"
    assert ("EXPOSE", "7860") in instrs
    health = " ".join(a for kw, a in instrs if kw == "HEALTHCHECK")
    assert "127.0.0.1:7860/health" in health
    entry = exec_form(next(a for kw, a in instrs if kw == "ENTRYPOINT"))
    command = entry + exec_form(next((a for kw, a in instrs if kw == "CMD"), "[]"))
    assert command[:2] == ["python", "app.py"] and "--insecure" not in command
    assert " ".join(command).count("--host 0.0.0.0") == 1 and "--data-root /data" in " ".join(command)


def test_dockerignore_keeps_the_data_root_and_caches_out_and_the_code_in():
    patterns = ignore_patterns()
    for path in ("data", "data/datasets/demo/meta/info.json", "runs/x/log.jsonl", ".git", ".git/HEAD",
                 ".venv-ci/bin/python", "vla_demo/__pycache__/app.cpython-311.pyc", ".pytest_cache/v",
                 "tests/test_docker.py"):
        assert dockerignored(path, patterns), f"{path} would go into the build context"
    copied = [src for kw, a in instructions(DOCKERFILE.read_text()) if kw == "COPY" for src in a.split()[:-1]
              if not src.startswith("--")]
    for src in copied:
        assert (REPO / src).exists() and not dockerignored(src, patterns), f"COPY {src} needs it in the context"
    for path in ("vla_demo/ui/layout.py", "vla_demo/ui/teleop.js", "assets/policies/default/config.json"):
        assert not dockerignored(path, patterns), f"{path} must reach the image"


# ----------------------------------------------------------------------------- real build and run


def docker_unavailable() -> str | None:
    """Why the real image cannot be built here (None when it can)."""
    exe = shutil.which("docker")
    if exe is None:
        return "docker CLI not found on PATH"
    try:
        info = subprocess.run([exe, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                              timeout=60)
    except subprocess.TimeoutExpired:
        return "Docker daemon not reachable: `docker info` timed out after 60 s"
    if info.returncode != 0:
        why = next((line for line in (info.stderr or info.stdout).splitlines() if line.strip()), "no output")
        return f"Docker daemon not reachable (`docker info` failed: {why.strip()})"
    base = build_args(instructions(DOCKERFILE.read_text()))["BASE_IMAGE"]
    if subprocess.run([exe, "image", "inspect", base], capture_output=True, timeout=60).returncode != 0:
        return f"base image {base} is not present locally (`docker pull {base}` first; the test never pulls)"
    return None


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({done.returncode}):\n"
                             f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


@pytest.fixture(scope="module")
def image():
    reason = docker_unavailable()
    if reason:
        pytest.skip(reason)
    tag = f"vla-demo-test:{secrets.token_hex(4)}"
    docker("build", "-t", tag, "--build-arg", f"TORCH_INDEX_URL={TORCH_INDEX}", str(REPO), timeout=3600)
    yield tag
    docker("rmi", "-f", tag, check=False)


@pytest.fixture
def container_name(image):
    name = f"vla-demo-test-{secrets.token_hex(4)}"
    yield name
    docker("rm", "-f", name, check=False)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_container_refuses_to_start_without_auth(image, container_name):
    done = docker("run", "--name", container_name, image, check=False, timeout=300)
    assert done.returncode != 0
    assert "refusing to serve on 0.0.0.0 without auth" in done.stdout + done.stderr
    assert docker("image", "inspect", "-f", "{{.Config.User}}", image).stdout.strip() == "vla"


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_container_with_auth_is_healthy_and_guards_the_page(image, container_name):
    import httpx

    docker("run", "-d", "--name", container_name, "-e", f"VLA_DEMO_AUTH={AUTH}", "-p", "127.0.0.1::7860",
           "--health-interval", "2s", "--health-start-period", "300s", image)
    port = docker("port", container_name, "7860/tcp").stdout.strip().splitlines()[0].rsplit(":", 1)[1]
    base = f"http://127.0.0.1:{port}/"

    def healthy_http() -> bool:
        state = docker("inspect", "-f", "{{.State.Running}}", container_name).stdout.strip()
        assert state == "true", docker("logs", container_name, check=False).stdout[-3000:]
        try:
            return httpx.get(base + "health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    assert wait_for(healthy_http, timeout=300, period=1.0), docker("logs", container_name, check=False).stdout[-3000:]
    assert httpx.get(base + "health", timeout=10).json() == {"status": "ok", "service": "vla-demo"}
    status = lambda: docker("inspect", "-f", "{{.State.Health.Status}}", container_name).stdout.strip()  # noqa: E731
    assert wait_for(lambda: status() == "healthy", timeout=120, period=1.0), status()
    assert httpx.get(base + "config", timeout=10).status_code == 401
    page = httpx.get(base, timeout=10)
    assert '"auth_required":true' in page.text.replace(" ", "") and "E-STOP" not in page.text
    user, password = AUTH.split(":")
    with httpx.Client(base_url=base, timeout=10) as web:
        assert web.post("login", data={"username": user, "password": password}).status_code == 200
        assert web.get("config").status_code == 200
    assert docker("exec", container_name, "id", "-u").stdout.strip() != "0"
