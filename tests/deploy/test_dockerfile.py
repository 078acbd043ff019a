"""deploy/Dockerfile read as an image builder would: stages, sources, users, health checks.

No Docker engine runs here, so the images are not built; this parses the Dockerfile and
checks what a build would trip over or a reviewer should refuse: a COPY of a path that is
not in the repository, an unnamed stage, a target that runs as root, a service image
without a HEALTHCHECK or whose command is not a ``triage`` command.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest

from tests.deploy.conftest import DEPLOY, ROOT, TRIAGE_TARGETS
from triage import health
from triage.cli import main as triage_cli

PENDING_COMMANDS: dict[str, str] = {}
"""``triage`` commands the images run that other branches add; the lead removes each entry
at merge (test_pending_commands_are_still_pending says when)."""


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    return lines


def parse_dockerfile(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages in order."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(path.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            assert match, f"cannot read FROM {rest}"
            stages.append(Stage(name=match.group(2) or "", base=match.group(1)))
        elif not stages:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse_dockerfile(DEPLOY / "Dockerfile")


def _stage(stages: list[Stage], name: str) -> Stage:
    return next(stage for stage in stages if stage.name == name)


def _chain(stages: list[Stage], name: str) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    names = {stage.name for stage in stages}
    chain = [_stage(stages, name)]
    while chain[-1].base in names:
        chain.append(_stage(stages, chain[-1].base))
    return chain


def _last(stages: list[Stage], name: str, keyword: str) -> str | None:
    for stage in _chain(stages, name):
        for kw, rest in reversed(stage.instructions):
            if kw == keyword:
                return rest
    return None


def test_every_stage_is_named_and_every_target_exists(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    _, stages = dockerfile
    names = [stage.name for stage in stages]
    assert all(names), "an unnamed stage cannot be targeted or copied from by name"
    assert len(set(names)) == len(names)
    assert set(TRIAGE_TARGETS) <= set(names)


def test_base_images_are_pinned_and_the_gpu_worker_starts_from_cuda(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    args, stages = dockerfile
    names = {stage.name for stage in stages}
    for stage in stages:
        if stage.base in names:
            continue
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], stage.base)
        assert ":" in image and not image.endswith(":latest"), f"{stage.name}: unpinned {image}"
    gpu_base = re.sub(
        r"\$\{(\w+)\}", lambda m: args[m.group(1)], _chain(stages, "worker-gpu")[-1].base
    )
    assert gpu_base.startswith("nvidia/cuda:")


def test_every_copy_source_is_in_the_repository(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    _, stages = dockerfile
    copies = 0
    for stage in stages:
        for keyword, rest in stage.instructions:
            if keyword not in ("COPY", "ADD"):
                continue
            words = shlex.split(rest)
            if any(word.startswith("--from=") for word in words):
                source_stage = next(w for w in words if w.startswith("--from="))[7:]
                assert source_stage in {s.name for s in stages}, source_stage
                continue
            sources = [w for w in words if not w.startswith("--")][:-1]
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
                copies += 1
    assert copies >= 6


@pytest.mark.parametrize("target", TRIAGE_TARGETS)
def test_each_service_runs_as_the_unprivileged_user(
    dockerfile: tuple[dict[str, str], list[Stage]], target: str
) -> None:
    _, stages = dockerfile
    user = _last(stages, target, "USER")
    assert user is not None, f"{target} runs as root (no USER)"
    assert user.split(":")[0] not in ("root", "0")
    created = " ".join(rest for stage in _chain(stages, target) for kw, rest in stage.instructions)
    assert re.search(rf"useradd\b[^&]*\b{re.escape(user)}\b", created), (
        f"{target}: USER {user} is never created"
    )


@pytest.mark.parametrize("target", TRIAGE_TARGETS)
def test_each_service_has_a_writable_home_for_library_caches(
    dockerfile: tuple[dict[str, str], list[Stage]], target: str
) -> None:
    """torch, triton and matplotlib write caches under $HOME; the user has no home
    directory and Kubernetes mounts the root filesystem read-only, so HOME must be the
    var directory (an emptyDir there)."""
    _, stages = dockerfile
    env = " ".join(
        rest for stage in _chain(stages, target) for kw, rest in stage.instructions if kw == "ENV"
    )
    assert "HOME=/var/lib/pacs-triage" in env and "TRIAGE_VAR_DIR=/var/lib/pacs-triage" in env


@pytest.mark.parametrize("target", TRIAGE_TARGETS)
def test_each_service_has_a_healthcheck_that_the_probe_module_answers(
    dockerfile: tuple[dict[str, str], list[Stage]], target: str
) -> None:
    _, stages = dockerfile
    check = _last(stages, target, "HEALTHCHECK")
    assert check is not None and "CMD" in check, f"{target} has no HEALTHCHECK"
    probe = re.search(r"triage\.health\W+(\w+)", check)
    assert probe, f"{target}: the health check is not triage.health"
    assert probe.group(1) in health.main.commands


def _triage_command(cmd: str) -> list[str]:
    words: list[str] = __import__("json").loads(cmd) if cmd.startswith("[") else shlex.split(cmd)
    assert words[0] == "triage", f"CMD {cmd} is not a triage command"
    return words[1:]


def _registered(words: list[str]) -> bool:
    group: click.Command = triage_cli
    for word in words:
        if not isinstance(group, click.Group) or word not in group.commands:
            return False
        group = group.commands[word]
        if not isinstance(group, click.Group):
            return True
    return True


@pytest.mark.parametrize("target", TRIAGE_TARGETS)
def test_each_service_command_is_a_triage_command(
    dockerfile: tuple[dict[str, str], list[Stage]], target: str
) -> None:
    _, stages = dockerfile
    cmd = _last(stages, target, "CMD")
    assert cmd is not None
    words = _triage_command(cmd)
    assert _registered(words) or words[0] in PENDING_COMMANDS, f"triage {words[0]}: no such command"


def test_pending_commands_are_still_pending() -> None:
    """Once a pending command lands, its entry in PENDING_COMMANDS must go."""
    landed = [name for name in PENDING_COMMANDS if name in triage_cli.commands]  # type: ignore[attr-defined]
    assert landed == [], f"remove {landed} from PENDING_COMMANDS: they are real commands now"


def test_the_slim_image_leaves_out_exactly_the_torch_family() -> None:
    """The listener/web image drops torch and what only torch needs, nothing else."""
    text = (DEPLOY / "Dockerfile").read_text()
    pattern = re.search(r"grep -v -E '(\^\([^']+)' /tmp/requirements.lock > /tmp/slim.lock", text)
    assert pattern, "the slim stage's lock filter moved"
    lock = (ROOT / "requirements.lock").read_text().splitlines()
    dropped = {line.split("==")[0] for line in lock if re.match(pattern.group(1), line)}
    assert {"torch", "torchvision", "timm", "triton"} <= dropped
    assert all(
        name in {"torch", "torchvision", "timm", "triton"} or name.startswith(("nvidia-", "cuda-"))
        for name in dropped
    ), dropped


def test_the_slim_image_services_start_without_the_torch_family() -> None:
    """What the listener image runs imports with torch, torchvision, timm and triton absent
    (they are not installed there): the CLI, the listener, migrations and the probe."""
    blocker = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'torch', 'torchvision', 'timm', 'triton'}:\n"
        "            raise ImportError(f'{name} is not in the slim image')\n"
        "sys.meta_path.insert(0, Block())\n"
        "try:\n"
        "    import torch\n"
        "    raise SystemExit('the blocker let torch in')\n"
        "except ImportError:\n"
        "    pass\n"
        "import triage.cli, triage.health, listener.service, db.migrate\n"
        "from click.testing import CliRunner\n"
        "for args in (['--help'], ['listen', '--help'], ['db', 'upgrade', '--help']):\n"
        "    assert CliRunner().invoke(triage.cli.main, args).exit_code == 0, args\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", blocker], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
