"""The Dockerfile, compose.yaml and docker/ hold to what the tests run, since no container runtime runs here:

- the image's build steps are the packaging test's (test_wheel.py): the same Python, the same build tools,
  the same inputs and build command, `pip install <wheel> -c constraints.txt` into a fresh venv, `manifold
  init`; its HEALTHCHECK and docker/haproxy.cfg's health check are run against a real gateway there;
- compose.yaml's services are the processes the replica test starts (tests/replicas): `manifold serve`
  replicas on one database with one secret key, the first started alone, haproxy round-robin in front;
- docker/config passes `manifold check` and is the starter configuration `manifold init` writes.
"""

from __future__ import annotations

import io
import json
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from manifold.config.check import run_check
from manifold.config.init_cli import run_init, starter_server_yaml
from manifold.config.loader import load_config
from tests.packaging import wheelenv
from tests.replicas import harness as replicas

pytestmark = pytest.mark.packaging

ROOT = wheelenv.ROOT
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "compose.yaml"
HAPROXY_CFG = ROOT / "docker" / "haproxy.cfg"
DOCKER_CONFIG = ROOT / "docker" / "config" / "manifold.yaml"
IMAGE_PYTHON = "/opt/manifold/bin/python"
COMPOSE_ENV = {
    "DATABASE_URL": "postgresql://manifold:password@postgres:5432/manifold",
    "MANIFOLD_PUBLIC_URL": "http://localhost:8470",
}


# ---- the Dockerfile ---------------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    steps: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)

    def all(self, instruction: str) -> list[str]:
        return [args for kind, args in self.steps if kind == instruction]


def stages(text: str | None = None) -> list[Stage]:
    """The Dockerfile's stages: comments dropped, continued lines joined."""
    text = DOCKERFILE.read_text() if text is None else text
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    found: list[Stage] = []
    for line in logical:
        kind, _, args = line.strip().partition(" ")
        kind, args = kind.upper(), " ".join(args.split())
        if kind == "FROM":
            words = args.split()
            found.append(Stage(words[0], words[2] if len(words) == 3 and words[1].upper() == "AS" else None))
        else:
            assert found, f"{kind} before the first FROM"
            found[-1].steps.append((kind, args))
    return found


def healthcheck_argv(port: int | None = None, python: str = "python") -> list[str]:
    """The final stage's HEALTHCHECK command, with the image's `python` replaced (and its port, if given)."""
    (check,) = stages()[-1].all("HEALTHCHECK")
    argv = json.loads(check[check.index("CMD ") + 4 :])
    assert argv[0] == "python"
    code = argv[2] if port is None else argv[2].replace(":8470/", f":{port}/")
    return [python, argv[1], code]


def _test_extra_pin(package: str) -> str:
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    (pin,) = [p for p in extra if p.split("==")[0].lower() == package]
    return pin


def test_the_image_builds_the_wheel_as_the_packaging_test_does() -> None:
    builder, final = stages()
    # The Python of the project venv, which builds the wheel and makes the clean venv in test_wheel.py.
    python = f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"
    assert (builder.base, final.base) == (python, python)
    assert builder.name == "builder"

    # The build tools the project venv builds with, pinned alike.
    installs = [r for r in builder.all("RUN") if "pip install" in r]
    assert len(installs) == 1
    tools = shlex.split(installs[0])
    assert _test_extra_pin("build") in tools and _test_extra_pin("setuptools") in tools
    assert tools[tools.index("-c") + 1] == "constraints.txt"

    # The same inputs (and nothing else of the repository), the same command.
    copied = {src for c in builder.all("COPY") for src in c.split()[:-1]}
    assert copied == {*wheelenv.BUILD_INPUTS, "constraints.txt"}
    builds = [r for r in builder.all("RUN") if "-m build" in r]
    assert len(builds) == 1
    assert builds[0].startswith("python " + " ".join(wheelenv.BUILD_ARGS) + " ")


def test_the_image_installs_the_wheel_into_a_venv_with_the_constraints_and_runs_as_a_user() -> None:
    final = stages()[-1]
    run = " && ".join(final.all("RUN"))
    commands = [shlex.split(c.strip()) for c in run.split("&&")]
    assert ["python", "-m", "venv", "/opt/manifold"] in commands
    pip = IMAGE_PYTHON.removesuffix("python") + "pip"
    (install,) = [c for c in commands if c[:2] == [pip, "install"]]
    wheels = [w for w in install if w.endswith(".whl")]
    assert wheels == ["/tmp/dist/mcp_manifold-*.whl"]
    assert install[install.index("-c") + 1] == "/tmp/constraints.txt"
    assert "--no-deps" not in install and "-e" not in install
    assert ["manifold", "init", "/etc/manifold", "--state-dir", "/var/lib/manifold"] in commands
    assert any(c[0] == "useradd" and c[-1] == "manifold" for c in commands)

    # Everything after the installation runs as that user, never root.
    users = final.all("USER")
    assert users and users[-1] not in ("root", "0", "0:0")
    last_user = max(i for i, (kind, _) in enumerate(final.steps) if kind == "USER")
    assert all(kind != "RUN" for kind, _ in final.steps[last_user:])

    volumes = json.loads(final.all("VOLUME")[0])
    assert volumes == ["/etc/manifold", "/var/lib/manifold"]
    assert final.all("EXPOSE") == ["8470"]
    entry = json.loads(final.all("ENTRYPOINT")[0]) + json.loads(final.all("CMD")[0])
    # 0.0.0.0 only here, said explicitly: the container's loopback is unreachable from outside it.
    assert entry == ["manifold", "--config", "/etc/manifold/manifold.yaml", "serve", "--host", "0.0.0.0"]
    argv = healthcheck_argv()
    assert "urllib.request" in argv[2] and "http://127.0.0.1:8470/readyz" in argv[2]


def test_stages_reads_continued_lines_and_stage_names() -> None:
    parsed = stages("FROM a:1 AS b\n# c\nRUN x \\\n    && y\nFROM a:1\nUSER u\n")
    assert [(s.base, s.name) for s in parsed] == [("a:1", "b"), ("a:1", None)]
    assert parsed[0].steps == [("RUN", "x && y")]
    assert parsed[1].all("USER") == ["u"]


# ---- compose.yaml and docker/ ---------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_runs_two_replicas_of_the_image_on_postgresql_behind_haproxy() -> None:
    services = _compose()["services"]
    assert set(services) == {"postgres", "gateway-a", "gateway-b", "haproxy"}
    assert services["postgres"]["image"] == "postgres:15"

    a, b = services["gateway-a"], services["gateway-b"]
    # The same process twice, as the replica test starts it: the image's `manifold serve` (no other command),
    # the same config, one database, the same state volume and so one secret key file.
    for gateway in (a, b):
        assert "command" not in gateway and "entrypoint" not in gateway
        assert gateway["build"] == "."
    for key in ("image", "environment", "volumes"):
        assert a[key] == b[key]
    assert a["environment"]["DATABASE_URL"].startswith("postgresql://manifold:")
    assert a["environment"]["DATABASE_URL"].endswith("@postgres:5432/manifold")
    assert "./docker/config:/etc/manifold:ro" in a["volumes"]
    (state,) = [v for v in a["volumes"] if v.endswith(":/var/lib/manifold")]
    assert state.split(":")[0] in _compose()["volumes"]  # a named volume both mount
    # The first replica starts alone (it makes the keys and the schema), the other once it is healthy:
    # run_replicas does the same.
    assert a["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert b["depends_on"]["gateway-a"] == {"condition": "service_healthy"}

    proxy = services["haproxy"]
    assert proxy["image"].startswith("haproxy:2.6")  # the replica test runs Debian 12's haproxy 2.6
    assert "./docker/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in proxy["volumes"]
    assert proxy["ports"] == ["127.0.0.1:8470:8470"]


def _haproxy_sections(text: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        line = line.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not line.startswith((" ", "\t")):
            current = line.strip()
            sections[current] = []
        else:
            sections[current].append(" ".join(line.split()))
    return sections


def test_haproxy_cfg_balances_as_the_replica_test_and_names_the_compose_replicas() -> None:
    ours = _haproxy_sections(HAPROXY_CFG.read_text())
    theirs = _haproxy_sections(replicas.haproxy_config(8470, [1, 2]))
    assert ours["defaults"] == theirs["defaults"]
    # The tests balance round-robin (no affinity: the harsher case); what ships keeps each caller on one replica,
    # as tests/replicas/test_affinity.py runs it.
    assert f"balance {replicas.AFFINITY}" in ours["backend replicas"]
    assert f"balance {replicas.ROUND_ROBIN}" in theirs["backend replicas"]
    assert "hash-type consistent" in ours["backend replicas"] and "hash-type consistent" in theirs["backend replicas"]
    assert ours["frontend mcp"] == ["bind :8470", "default_backend replicas"]
    servers = [line.split() for line in ours["backend replicas"] if line.startswith("server ")]
    assert servers == [["server", name, f"{name}:8470"] for name in ("gateway-a", "gateway-b")]
    assert "http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host localhost" in ours["backend replicas"]

    done = subprocess.run(
        [replicas.haproxy_binary(), "-c", "-f", str(HAPROXY_CFG)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_compose_config_is_the_starter_configuration_and_passes_check(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in COMPOSE_ENV.items():
        monkeypatch.setenv(name, value)
    environment = _compose()["services"]["gateway-a"]["environment"]
    assert set(environment) == set(COMPOSE_ENV)

    summary = io.StringIO()
    assert run_check(DOCKER_CONFIG, out=summary) == 0, summary.getvalue()
    assert "ok: 1 upstream, 1 virtual server" in summary.getvalue()
    config = load_config(DOCKER_CONFIG)
    assert config.state_dir == Path("/var/lib/manifold")
    assert config.settings.port == 8470
    assert config.settings.database_url == COMPOSE_ENV["DATABASE_URL"]

    # What `manifold init /etc/manifold --state-dir /var/lib/manifold` writes in the image, run by its Python.
    starter_dir = tmp_path / "etc"
    assert run_init(starter_dir, state_dir="/var/lib/manifold", python=IMAGE_PYTHON) == 0
    starter = load_config(starter_dir / "manifold.yaml")
    assert config.upstreams == starter.upstreams
    assert config.virtual_servers == starter.virtual_servers
    assert (DOCKER_CONFIG.parent / "virtual_servers" / "starter.yaml").read_text() == starter_server_yaml()
    for section in ("identity", "grants"):
        assert _section(DOCKER_CONFIG, section) == _section(starter_dir / "manifold.yaml", section)


def _section(path: Path, key: str) -> object:
    return yaml.safe_load(path.read_text())[key]
