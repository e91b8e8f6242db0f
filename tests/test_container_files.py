"""What can be checked of the container setup without a Docker engine.

- hadolint on the Dockerfile and the compose-spec schema on docker-compose.yml (each also
  shown to reject a broken file, so a silent no-op tool cannot pass);
- the Dockerfile and the compose file agree with the code: commands parse with the real
  CLI parser, every SESGUARD_* variable is a Settings field with a valid value, the stop
  grace outlasts the service's own drain, the healthcheck is `sesguard health`;
- the Dockerfile's install command works in a clean venv (see that test's docstring).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from sesguard.cli import build_parser
from sesguard.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the project venv's bin: hadolint, check-jsonschema
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"


def run(cmd: list[str], timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout, **kw)


# ---- a small Dockerfile reader ---------------------------------------------------------


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        line, buf = buf + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), " ".join(rest.split())))
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions(DOCKERFILE.read_text()):
        if ins[0] == "FROM":
            result.append([])
        result[-1].append(ins)
    return result


def exec_form(args: str) -> list[str]:
    value = orjson.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def builder_copy_sources() -> list[str]:
    sources = []
    for word, args in stages()[0]:
        if word == "COPY" and not args.startswith("--from"):
            sources += args.split()[:-1]
    return sources


# ---- static checks ---------------------------------------------------------------------


def test_hadolint_clean(tmp_path: Path) -> None:
    result = run([str(BIN / "hadolint"), str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    assert run([str(BIN / "hadolint"), str(bad)]).returncode != 0


def test_compose_file_matches_the_compose_spec(tmp_path: Path) -> None:
    cmd = [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec"]
    result = run([*cmd, str(COMPOSE)])
    assert result.returncode == 0, result.stdout + result.stderr
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(COMPOSE.read_text().replace("stop_grace_period:", "stop_grace_perod:"))
    assert run([*cmd, str(bad)]).returncode == 1


def test_dockerfile_builds_a_lean_non_root_image() -> None:
    builder, final = stages()[0], stages()[-1]
    assert len(stages()) == 2
    base = final[0][1]
    assert re.fullmatch(r"python:3\.11[\w.-]*-slim-bookworm", base), base
    assert builder[0][1].startswith(f"{base} AS ")  # the venv's python is the same one
    runs = [args for word, args in builder if word == "RUN"]
    assert "pip install --no-cache-dir ." in runs  # the project, without dev extras
    final_text = " ".join(args for _, args in final)
    for tool in ("gcc", "build-essential", "pip install", "git "):
        assert tool not in final_text
    assert "--no-install-recommends" in final_text and "rm -rf /var/lib/apt/lists/*" in final_text
    user = next(args for word, args in final if word == "USER")
    assert user.split(":")[0] not in ("root", "0")
    env = dict(
        pair.split("=", 1) for word, args in final if word == "ENV" for pair in shlex.split(args)
    )
    assert env["PYTHONUNBUFFERED"] == "1"
    ours = {k.removeprefix("SESGUARD_").lower() for k in env if k.startswith("SESGUARD_")}
    assert ours <= set(Settings.model_fields), ours
    entry = exec_form(next(args for word, args in final if word == "ENTRYPOINT"))
    assert entry[0].endswith("/tini") and entry[-1] == "--"
    assert exec_form(next(args for word, args in final if word == "CMD")) == ["sesguard", "sender"]


def healthcheck_command() -> list[str]:
    args = next(a for w, a in stages()[-1] if w == "HEALTHCHECK")
    return exec_form(args.split(" CMD ", 1)[1])


def test_healthcheck_is_sesguard_health(tmp_path: Path) -> None:
    """The exact HEALTHCHECK command parses and reports a missing heartbeat as unhealthy."""
    cmd = healthcheck_command()
    assert cmd[:2] == ["sesguard", "health"]
    env = {**os.environ, "SESGUARD_HEARTBEAT_FILE": str(tmp_path / "hb")}
    result = run([str(BIN / cmd[0]), *cmd[1:]], env=env)
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith("unhealthy: no heartbeat")


def test_copied_sources_exist_and_pass_dockerignore() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for src in builder_copy_sources():
        assert (ROOT / src).exists(), f"Dockerfile copies {src}, which is not in the checkout"
        assert src.rstrip("/") in allowed, f".dockerignore drops {src}"


# ---- compose agrees with the code --------------------------------------------------------


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def seconds(duration: str) -> float:
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def test_compose_services_run_the_sesguard_commands() -> None:
    services = compose()["services"]
    assert services["sender"]["command"] == ["sesguard", "sender"]
    assert services["worker"]["command"] == ["sesguard", "worker"]
    parser = build_parser()
    for name in ("bootstrap", "sender", "worker"):
        svc = services[name]
        assert svc["build"] == "."
        cmd = svc["command"]
        assert cmd[0] == "sesguard"
        parser.parse_args(cmd[1:])  # SystemExit on anything the CLI would refuse
    assert services["bootstrap"]["command"][1] == "bootstrap"


def test_compose_order_and_lifecycle() -> None:
    services = compose()["services"]
    for name in ("bootstrap", "sender", "worker"):
        for emulator in ("localstack", "moto"):
            assert services[name]["depends_on"][emulator]["condition"] == "service_healthy"
    for name in ("sender", "worker"):
        svc = services[name]
        assert svc["depends_on"]["bootstrap"]["condition"] == "service_completed_successfully"
        assert svc["restart"] in ("unless-stopped", "always", "on-failure")
        assert svc["healthcheck"]["test"] == ["CMD", *healthcheck_command()]
        grace = float(
            svc["environment"].get(
                "SESGUARD_STOP_GRACE_SECONDS", Settings.model_fields["stop_grace_seconds"].default
            )
        )
        assert seconds(svc["stop_grace_period"]) > grace, "SIGKILL would cut the drain short"
    assert services["localstack"]["healthcheck"]["test"][-1].endswith("/_localstack/health")


def test_compose_pins_emulators_that_start_free() -> None:
    """LocalStack at a release that starts without an auth token (2026.3 and later images
    need LOCALSTACK_AUTH_TOKEN), the one tests/localstack-requirements.txt installs; moto at
    the version pyproject.toml pins for the tests and the demo."""
    services = compose()["services"]
    image, tag = services["localstack"]["image"].split(":")
    assert image == "localstack/localstack"
    assert tuple(int(n) for n in tag.split(".")) <= (4, 14, 0), tag
    pins = (ROOT / "tests" / "localstack-requirements.txt").read_text()
    assert f"\nlocalstack-core=={tag}\n" in pins
    moto_pin = re.search(r'"moto\[server\]==([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    assert moto_pin
    assert services["moto"]["image"] == f"motoserver/moto:{moto_pin[1]}"


def test_compose_routes_each_service_to_an_emulator_that_has_it() -> None:
    """LocalStack's free edition answers 501 for SESv2: SESv2 goes to moto through the SDK's
    per-service variable, for every sesguard service; LocalStack runs only what is used."""
    services = compose()["services"]
    localstack_services = services["localstack"]["environment"]["SERVICES"].split(",")
    # every client sesguard.aws.clients.open_clients makes, but SESv2 (events: lifecycle events)
    assert sorted(localstack_services) == ["dynamodb", "events", "firehose", "s3", "sqs", "sts"]
    moto_port = services["moto"]["environment"]["MOTO_PORT"]
    assert services["moto"]["ports"] == [f"127.0.0.1:{moto_port}:{moto_port}"]
    for name in ("bootstrap", "sender", "worker"):
        env = services[name]["environment"]
        assert env["AWS_ENDPOINT_URL_SESV2"] == f"http://moto:{moto_port}"
        others = {k for k in env if k.startswith("AWS_ENDPOINT_URL_")} - {"AWS_ENDPOINT_URL_SESV2"}
        assert not others, others


def test_compose_environment_is_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose()["services"]
    for name in ("bootstrap", "sender", "worker"):
        env = {k: str(v) for k, v in services[name]["environment"].items()}
        ours = {k: v for k, v in env.items() if k.startswith("SESGUARD_")}
        fields = Settings.model_fields
        unknown = {k for k in ours if k.removeprefix("SESGUARD_").lower() not in fields}
        assert not unknown, f"{name}: not sesguard settings: {sorted(unknown)}"
        for key in [k for k in os.environ if k.startswith("SESGUARD_")]:
            monkeypatch.delenv(key)
        for key, value in ours.items():
            monkeypatch.setenv(key, value)
        settings = load_settings()  # SettingsError names a bad value
        assert settings.simulate_events is True
        assert settings.notify_from
        endpoint = env["AWS_ENDPOINT_URL"]
        assert re.fullmatch(r"http://localstack:4566", endpoint), endpoint
        assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"]
        assert env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")


# ---- the install command, in a clean venv ------------------------------------------------


def test_dockerfile_install_command_works_in_a_clean_venv(tmp_path: Path) -> None:
    """Runs the Dockerfile's `pip install --no-cache-dir .` on a copy of exactly what the
    Dockerfile copies, in a fresh venv, then starts the three entry points from there.

    Honest but fast: the fresh venv sees the project venv's site-packages through a .pth
    line, so the pinned runtime dependencies count as installed and are not downloaded
    again (a .pth path line does not run that venv's editable-install hook, so the project
    itself must come from the new install; the test checks it does). The build backend
    (setuptools, wheel) is fetched from the package index into pip's isolated build env,
    as in `docker build`. What this does not check: downloading the dependencies, which
    the pins in pyproject.toml decide.
    """
    src = tmp_path / "src"
    src.mkdir()
    for name in builder_copy_sources():
        path = ROOT / name
        if path.is_dir():
            skip = shutil.ignore_patterns("__pycache__", "*.py[cod]")  # as .dockerignore
            shutil.copytree(path, src / name, ignore=skip)
        elif path.exists():  # a missing file fails test_copied_sources_exist_...
            shutil.copy2(path, src / name)
    venv = tmp_path / "venv"
    made = run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    assert made.returncode == 0, made.stderr
    py = venv / "bin" / "python"
    site = Path(
        run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
        ).stdout.strip()
    )
    (site / "_project_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    pip_install = next(
        args for word, args in stages()[0] if word == "RUN" and args.startswith("pip install")
    )
    assert pip_install == "pip install --no-cache-dir ."
    install = run(
        [str(py), "-m", *shlex.split(pip_install), "--disable-pip-version-check"],
        cwd=src,
        timeout=300,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    installed = {p.name.split("-")[0] for p in site.iterdir()} - {"_project_venv.pth"}
    assert installed == {"sesguard", "sender", "worker"}, installed  # no extra, no dev deps

    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    where = run(
        [
            str(py),
            "-c",
            "import sesguard, sender, worker; print(sesguard.__file__, "
            "sender.__file__, worker.__file__)",
        ],
        cwd=workdir,
        env=env,
    )
    assert where.returncode == 0, where.stderr
    assert all(Path(p).is_relative_to(site) for p in where.stdout.split()), where.stdout

    for cmd in (
        [str(venv / "bin" / "sesguard"), "--help"],
        [str(py), "-m", "sender", "--help"],
        [str(py), "-m", "worker", "--help"],
    ):
        result = run(cmd, cwd=workdir, env=env)
        assert result.returncode == 0, f"{' '.join(cmd[-3:])}: {result.stderr[-2000:]}"
        assert "usage:" in result.stdout
