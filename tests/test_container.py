"""The container files: install script in a clean directory, Dockerfile, compose files.

No image can be built here (no Docker daemon, no registry): the Dockerfile's
install steps are scripts/install.sh, run here for real; the compose files are
validated against the Compose Specification's schema and against memoryd's own
settings.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from daemon.config import Settings
from tests.harness import ROOT

SAMPLE = {"MEMORYD_API_KEY": "k", "MEMORYD_ADMIN_TOKEN": "t", "REDIS_PASSWORD": "p"}


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} (a missing required one fails)."""

    def value(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if name in env and env[name] != "":
            return env[name]
        assert op != ":?", f"{name} is required: {arg}"
        return arg if op == ":-" else ""

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", value, text)


def compose(name: str, env: dict[str, str] = SAMPLE) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(interpolate((ROOT / name).read_text(), env))
    return data


@pytest.mark.parametrize("name", ["compose.yaml", "compose.gpu.yaml"])
def test_compose_files_match_the_compose_specification(name: str) -> None:
    schema = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())
    jsonschema.Draft7Validator(schema).validate(compose(name))


def test_compose_refuses_to_start_without_its_secrets() -> None:
    for missing in SAMPLE:
        env = {k: v for k, v in SAMPLE.items() if k != missing}
        with pytest.raises(AssertionError, match=f"{missing} is required"):
            compose("compose.yaml", env)


def test_compose_services_fit_together() -> None:
    services = compose("compose.yaml")["services"]
    for name, service in services.items():
        for needed in service.get("depends_on", {}):
            assert needed in services, f"{name} depends on unknown {needed}"
    vllm, memoryd = services["vllm"], services["memoryd"]
    argv = vllm["command"]
    flag = {a: argv[i + 1] for i, a in enumerate(argv[:-1]) if a.startswith("--")}
    assert flag["--served-model-name"] == "base" and "--enable-lora" in argv
    assert vllm["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    # memoryd's settings, as its environment gives them.
    env = {k: str(v) for k, v in memoryd["environment"].items()}
    old = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("MEMORYD_")}
    try:
        os.environ.update(env)
        settings = Settings()
    finally:
        for k in env:
            os.environ.pop(k)
        os.environ.update(old)
    assert settings.engine.upstreams == [f"http://vllm:{flag['--port']}"]
    assert settings.redis.url.startswith("redis://redis:") and settings.redis.password == "p"
    assert settings.engine.model == flag["--model"] == services["model"]["command"][-1]
    # vLLM loads adapters by the path memoryd writes them under: one volume, one path.
    assert str(settings.state_dir) == "/var/lib/memoryd"
    assert set(vllm["volumes"]) & set(memoryd["volumes"]) == {"memoryd-state:/var/lib/memoryd"}


def test_dockerfile_installs_through_the_script() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=", text, re.M) and re.search(r"^ARG VLLM=", text, re.M)
    run = re.findall(r"^RUN (.*)$", text, re.M)
    assert any(line.startswith('scripts/install.sh --venv /opt/memoryd/.venv --vllm "${VLLM}"')
               for line in run), run  # fmt: skip
    for line in re.findall(r"^COPY (.*)$", text, re.M):
        for source in line.split()[:-1]:
            assert (ROOT / source).exists(), source
    assert "umask 0077" in text and "USER memoryd" in text


def test_install_script_in_a_clean_directory(tmp_path: Path) -> None:
    """scripts/install.sh on a copy of the repository, into a fresh virtual environment.

    The fresh environment sees this one's packages (a .pth file), so pip installs
    memoryd itself and finds every dependency already there: the script's steps
    run for real in minutes less than a download of torch and vLLM.
    """
    source = tmp_path / "src"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split("\0")  # fmt: skip
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    (site / "site-packages" / "shared.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("PYTHONPATH", None)
    out = subprocess.run(
        [str(source / "scripts" / "install.sh"), "--venv", str(venv), "--vllm", "none"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"memoryd installed in {venv}" in out.stdout
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import daemon; print(daemon.__file__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert where.startswith(str(site)), where  # memoryd from the copy, installed into the venv
    bad = subprocess.run(
        [str(source / "scripts" / "install.sh"), "--vllm", "tpu"],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 2 and "--vllm must be" in bad.stderr
