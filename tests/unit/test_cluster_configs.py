"""The cluster configs: Ray's launcher schema, KubeRay's CRD schemas, and every documented command.

Commands are checked against the installed CLIs themselves (``ray`` and ``hz-ray`` are both
click programs): each subcommand must exist, each option must be one it takes (with a value of
the right type where the type is not a path), and no positional argument may be missing or left
over. A command nested in another (``ray exec CFG 'hz-ray run ...'``, ``ray job submit -- hz-ray
...``, ``kubectl exec POD -- hz-ray ...``) is checked in turn.
"""

from __future__ import annotations

import ast
import copy
import functools
import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster_configs"
LAUNCHER = CLUSTER / "ray-cluster.yaml"
JOB_CONFIG = CLUSTER / "job.yaml"
README = CLUSTER / "README.md"
KUBERAY = CLUSTER / "kuberay"
RAYCLUSTER = KUBERAY / "raycluster.yaml"
RAYJOB = KUBERAY / "rayjob.yaml"
CONFIGMAP = KUBERAY / "job-configmap.yaml"
DOCKERFILE = KUBERAY / "Dockerfile"
CRDS = ROOT.parent / "shared" / "reference" / "kuberay"
TOOLS = ("ray", "hz-ray", "kubectl", "docker")


# ---------------------------------------------------------------------------------------------
# Command checking
# ---------------------------------------------------------------------------------------------

@dataclass
class Checked:
    """One parsed command: its path (``("ray", "job", "submit")``) and its parsed values."""

    path: tuple[str, ...]
    values: dict[str, Any]
    where: str
    command: click.Command

    def flag(self, name: str) -> Any:
        """The value given for option ``name`` (``"--address"``), or None."""
        for param in self.command.params:
            if isinstance(param, click.Option) and name in param.opts:
                return self.values.get(param.name)
        raise AssertionError(f"{' '.join(self.path)} has no option {name}")

    def arg(self, index: int = 0) -> Any:
        """The value of the command's ``index``-th positional argument, or None."""
        params = [p for p in self.command.params if isinstance(p, click.Argument)]
        return self.values.get(params[index].name)


def _ray_cli() -> click.Group:
    from ray.scripts.scripts import cli

    return cli


def _hz_cli() -> click.Group:
    from hz_ray.cli import cli

    return cli


def _tool(token: str) -> str:
    return token.rsplit("/", 1)[-1]


def _script_options(script: Path) -> set[str]:
    """The ``--flags`` an argparse script declares (read from its source, not run)."""
    flags: set[str] = set()
    for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "add_argument"):
            flags |= {a.value for a in node.args
                      if isinstance(a, ast.Constant) and str(a.value).startswith("-")}
    return flags


def _check_script_args(script: Path, args: list[str], where: str) -> None:
    known = _script_options(script)
    assert known, f"{where}: {script} declares no argparse options"
    for arg in args:
        if arg.startswith("--"):
            assert arg.split("=", 1)[0] in known, f"{where}: {script.name} has no option {arg}"


def check_click(group: click.Group, program: str, tokens: list[str],
                where: str) -> list[Checked]:
    """Parse ``tokens`` (without the program name) with ``group``; returns what was checked.

    Raises:
        AssertionError: On an unknown subcommand or option, a bad option value, or a missing
            or extra positional argument.
    """
    command: click.Command = group
    path = [program]
    args = list(tokens)
    # Contexts chained as click chains them, so a subcommand inherits its group's settings (its
    # help option names among them): click caches each command's help option on first use, and
    # a parentless context would cache one without ``-h`` for the whole process.
    ctx = click.Context(group, info_name=program, **group.context_settings)
    while isinstance(command, click.Group):
        assert args and not args[0].startswith("-"), f"{where}: {' '.join(path)} needs a command"
        sub = command.commands.get(args[0])
        assert sub is not None, f"{where}: {' '.join(path)} has no command {args[0]!r}"
        command, path, args = sub, [*path, args.pop(0)], args
        ctx = click.Context(command, info_name=path[-1], parent=ctx, **command.context_settings)
    try:
        values, leftover, _ = command.make_parser(ctx).parse_args(args)
    except click.UsageError as exc:
        raise AssertionError(f"{where}: {' '.join(path)}: {exc.format_message()}") from exc
    assert not leftover, f"{where}: {' '.join(path)}: unexpected arguments {leftover}"
    # Click marks a value the command line did not give with a sentinel (UNSET), not None.
    given = (str, bool, int, float, tuple, list)
    values = {k: v for k, v in values.items() if isinstance(v, given)}
    for param in command.params:
        if isinstance(param, click.Argument) and param.required:
            assert param.name in values, \
                f"{where}: {' '.join(path)} needs {param.human_readable_name}"
        value = values.get(param.name)
        if value is None or isinstance(param.type, (click.Path, click.File)):
            continue
        for one in value if isinstance(value, (list, tuple)) else [value]:
            try:
                param.type.convert(one, param, ctx)
            except click.BadParameter as exc:
                raise AssertionError(f"{where}: {' '.join(path)} {param.name}: {exc}") from exc
    found = [Checked(tuple(path), values, where, command)]
    found += _nested(tuple(path), values, where)
    return found


def _nested(path: tuple[str, ...], values: dict[str, Any], where: str) -> list[Checked]:
    """Commands inside a checked command: ray exec, ray job submit, ray submit."""
    if path == ("ray", "exec"):
        return check_command(shlex.split(values["cmd"]), where)
    if path == ("ray", "job", "submit"):
        return check_command(list(values["entrypoint"]), where)
    if path == ("ray", "submit"):
        script = ROOT / values["script"]
        assert script.is_file(), f"{where}: ray submit uploads {script}, which does not exist"
        _check_script_args(script, list(values.get("script_args") or ()), where)
    return []


def check_command(tokens: list[str], where: str) -> list[Checked]:
    """Check one command line (already split); returns the ray / hz-ray commands checked."""
    if not tokens:
        return []
    tool, rest = _tool(tokens[0]), tokens[1:]
    if tool == "ray":
        return check_click(_ray_cli(), "ray", rest, where)
    if tool == "hz-ray":
        return check_click(_hz_cli(), "hz-ray", rest, where)
    if tool == "kubectl":
        return _check_kubectl(rest, where)
    if tool == "docker":
        _check_docker(rest, where)
    return []


def _check_kubectl(args: list[str], where: str) -> list[Checked]:
    if args[:1] == ["apply"]:
        files = [args[i + 1] for i, a in enumerate(args) if a == "-f"]
        assert files, f"{where}: kubectl apply without -f"
        for name in files:
            assert (ROOT / name).is_file(), f"{where}: kubectl applies {name}, which does not exist"
    if args[:1] == ["exec"] and "--" in args:
        return check_command(args[args.index("--") + 1:], where)
    return []


def _check_docker(args: list[str], where: str) -> None:
    if args[:1] == ["build"]:
        dockerfile = args[args.index("-f") + 1]
        assert (ROOT / dockerfile).is_file(), f"{where}: no {dockerfile}"


# ---------------------------------------------------------------------------------------------
# Where the documented commands are
# ---------------------------------------------------------------------------------------------

def _command_lines(lines: Iterator[str]) -> Iterator[str]:
    for line in lines:
        text = line.strip()
        if text.split(" ", 1)[0] in TOOLS:
            yield text


def comment_commands(path: Path) -> list[str]:
    """Command lines in the ``#`` comments of a YAML file or Dockerfile.

    A command is a comment line indented by at least two spaces after the ``#``
    (``#   ray up ...``); prose comments (``# hz-ray jobs ...``) are not commands.
    """
    comments = (m.group(1) for line in path.read_text(encoding="utf-8").splitlines()
                if (m := re.match(r"\s*#\s{2,}(\S.*)$", line)))
    return list(_command_lines(comments))


def readme_commands(path: Path) -> list[str]:
    """Command lines in the fenced code blocks of a markdown file."""
    inside, lines = False, []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip().startswith("```"):
            inside = not inside
        elif inside:
            lines.append(line)
    return list(_command_lines(iter(lines)))


def check_lines(lines: list[str], where: str) -> list[Checked]:
    found: list[Checked] = []
    for line in lines:
        found += check_command(shlex.split(line, comments=True), f"{where}: {line}")
    return found


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------
# The checker itself can fail
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("line, message", [
    ("hz-ray run job.yaml --adress auto", "No such option"),
    ("hz-ray run job.yaml --hours many", "hours"),
    ("hz-ray run job.yaml --clock fast", "clock"),
    ("hz-ray launch job.yaml", "no command 'launch'"),
    ("hz-ray status", "needs RUN_DIR"),
    ("hz-ray status a b", "unexpected arguments"),
    ("ray up --min-worker 2 c.yaml", "No such option"),
    ("ray exec c.yaml 'hz-ray run job.yaml --adress auto'", "No such option"),
    ("ray job submit --address http://127.0.0.1:8265 -- hz-ray run j.yaml --seconds 2",
     "No such option"),
    ("ray submit c.yaml examples/ray_quickstart.py -- --adress auto", "no option --adress"),
    ("ray submit c.yaml examples/no_such_script.py", "does not exist"),
    ("kubectl apply -f cluster_configs/kuberay/no-such.yaml", "does not exist"),
])
def test_the_command_checker_rejects_bad_commands(line, message):
    with pytest.raises(AssertionError, match=re.escape(message)):
        check_lines([line], "test")


def test_the_command_checker_accepts_the_cli_interface():
    lines = ["hz-ray run c.yaml --hours 3 --run-dir d --resume --address auto --ray "
             "--clock accelerated --seconds-per-hour 0.5 --metrics-host 127.0.0.1 "
             "--metrics-port 9464",
             "hz-ray validate c.yaml", "hz-ray status d", "hz-ray stop d", "hz-ray report d",
             "hz-ray replay d"]
    paths = {c.path for c in check_lines(lines, "test")}
    assert {("hz-ray", n) for n in ("run", "validate", "status", "stop", "report", "replay")} \
        <= paths


def test_checking_a_command_line_leaves_the_clis_short_help_flag_working(monkeypatch, capsys):
    """Regression: the checker once parsed with a context that had no parent, so click cached a
    help option with only ``--help`` on the subcommand, and ``hz-ray replay -h`` then failed for
    the rest of the process (a CI run that ordered this file before test_cli.py)."""
    from hz_ray.cli import main
    from hz_ray.cli.folder_commands import replay_command

    monkeypatch.setattr(replay_command, "_help_option", None)  # click's per-command cache
    check_lines(["hz-ray replay d"], "test")
    assert main(["replay", "-h"]) == 0
    assert capsys.readouterr().out.startswith("Usage: hz-ray replay")


# ---------------------------------------------------------------------------------------------
# Ray cluster launcher
# ---------------------------------------------------------------------------------------------

def _ray_schema() -> dict[str, Any]:
    import ray.autoscaler

    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    assert schema_path.is_file(), f"Ray ships no launcher schema at {schema_path}"
    return json.loads(schema_path.read_text(encoding="utf-8"))


def test_launcher_yaml_matches_rays_schema_and_rays_own_checks():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _load(LAUNCHER)
    jsonschema.validate(config, _ray_schema())
    validate_config(prepare_config(copy.deepcopy(config)))   # what `ray up` runs first


@pytest.mark.parametrize("breakage", ["wrong type", "unknown key", "node type field"])
def test_a_broken_launcher_yaml_fails_rays_schema(breakage):
    config = _load(LAUNCHER)
    if breakage == "wrong type":
        config["setup_commands"] = "pip install hz-ray"
    elif breakage == "unknown key":
        config["file_mount"] = config.pop("file_mounts")
    else:
        config["available_node_types"]["arm_workers"]["min_worker"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, _ray_schema())


def _home(config: dict[str, Any], path: str) -> str:
    user = config["auth"]["ssh_user"]
    return re.sub(r"^(~|\$HOME)(?=/|$)", f"/home/{user}", path)


def test_launcher_uploads_the_checkout_and_a_valid_job_config():
    from hz_ray.cli import main

    config = _load(LAUNCHER)
    mounts = {_home(config, remote): local for remote, local in config["file_mounts"].items()}
    for remote, local in mounts.items():
        assert (ROOT / local).exists(), f"file_mounts uploads {local} ({remote}): not in the repo"
    checkout = [remote for remote, local in mounts.items() if (ROOT / local).resolve() == ROOT]
    assert checkout, "file_mounts must upload the checkout"
    assert {".venv", ".git"} <= set(config["rsync_exclude"]), "the upload must skip .venv, .git"
    job_files = {remote: ROOT / local for remote, local in mounts.items()
                 if (ROOT / local).is_file() and local.endswith((".yaml", ".yml"))}
    assert job_files, "file_mounts must upload a job config"
    for local in job_files.values():
        assert main(["validate", str(local)]) == 0, f"{local} fails hz-ray validate"
    assert main(["validate", str(JOB_CONFIG)]) == 0


def _setup_tokens(config: dict[str, Any]) -> list[list[str]]:
    return [[_home(config, t) for t in shlex.split(cmd)] for cmd in config["setup_commands"]]


def test_launcher_installs_hz_ray_into_a_venv_through_the_constraints():
    config = _load(LAUNCHER)
    checkout = next(_home(config, r) for r, local in config["file_mounts"].items()
                    if (ROOT / local).resolve() == ROOT)
    installs = [t for t in _setup_tokens(config) if _tool(t[0]) == "pip" and "install" in t]
    assert installs, "setup_commands install nothing"
    venvs = {t[0].rsplit("/bin/", 1)[0] for t in installs}
    assert len(venvs) == 1, f"pip of more than one environment: {venvs}"
    (venv,) = venvs
    for tokens in installs:
        assert tokens[tokens.index("-c") + 1] == f"{checkout}/constraints.txt", tokens
    assert (ROOT / "constraints.txt").is_file()
    assert any(checkout in (t.rstrip("/") for t in tokens) for tokens in installs), \
        "hz-ray must be installed from the uploaded checkout"
    text = " ".join(config["setup_commands"])
    home = f"/home/{config['auth']['ssh_user']}"
    assert f"{venv.replace(home, '$HOME')}/bin:$PATH" in text, \
        "the venv's bin must go first on PATH (~/.bashrc) for ray exec / ray submit / jobs"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        for cmd in config[key]:
            program = _home(config, shlex.split(cmd)[0])
            assert program == f"{venv}/bin/ray", f"{key} must start the venv's Ray: {cmd}"


def test_launcher_commands_parse_against_the_ray_and_hz_ray_clis():
    config = _load(LAUNCHER)
    found = check_lines(comment_commands(LAUNCHER), "ray-cluster.yaml")
    for key in ("head_start_ray_commands", "worker_start_ray_commands", "head_setup_commands"):
        found += check_lines(config.get(key, []), f"ray-cluster.yaml {key}")
    paths = [c.path for c in found]
    for needed in [("ray", "up"), ("ray", "exec"), ("ray", "down"), ("ray", "job", "submit"),
                   ("ray", "submit"), ("hz-ray", "run"), ("hz-ray", "validate")]:
        assert needed in paths, f"ray-cluster.yaml documents no `{' '.join(needed)}`"
    for checked in found:
        if checked.path[:2] in (("ray", "up"), ("ray", "exec"), ("ray", "down"),
                                ("ray", "submit"), ("ray", "dashboard"), ("ray", "rsync-down")):
            assert checked.values["cluster_config_file"] == "cluster_configs/ray-cluster.yaml"
    mounted = {_home(config, remote) for remote in config["file_mounts"]}
    runs = [c for c in found if c.path == ("hz-ray", "run")]
    for run in runs:
        assert run.flag("--address") == "auto", f"{run.where}: must join the cluster"
        assert _home(config, run.arg()) in mounted, \
            f"{run.where}: runs a config that file_mounts does not upload"
    start = next(c for c in found if c.path == ("ray", "start") and c.values.get("head"))
    assert start.flag("--dashboard-host") == "127.0.0.1"


# ---------------------------------------------------------------------------------------------
# KubeRay
# ---------------------------------------------------------------------------------------------

def _crd_schema(name: str) -> dict[str, Any]:
    path = CRDS / f"ray.io_{name}.yaml"
    if not path.is_file():
        pytest.skip(f"KubeRay CRD schemas are not here: {path} is missing (the reference folder "
                    "../shared/reference/kuberay/ next to the checkout; see cluster_configs/"
                    "README.md)")
    return _read_crd(path)


@functools.cache
def _read_crd(path: Path) -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


def strict(schema: Any, root: bool = True) -> Any:
    """The schema with unknown fields as errors, as ``kubectl apply --validate=strict`` has them.

    An object schema with ``properties`` and no ``additionalProperties`` gets
    ``additionalProperties: false`` (the API server would reject or prune unknown fields),
    except where ``x-kubernetes-preserve-unknown-fields`` keeps them; the top-level
    ``metadata`` (an ObjectMeta, checked by the API server) stays open.
    """
    if isinstance(schema, list):
        return [strict(s, False) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v, False) if k != "properties" else
           {name: strict(s, False) for name, s in v.items()} for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    if root:
        out["properties"]["metadata"] = {"type": "object"}
    return out


@functools.cache
def _validator(crd: str) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(strict(_crd_schema(crd)))


def _errors(manifest: Any, crd: str) -> list[str]:
    """Every schema error of ``manifest`` against CRD ``crd``, as ``path: message`` lines."""
    validator = _validator(crd)
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator.iter_errors(manifest)]


def _cel_fields(schema: Any) -> set[str]:
    """Names of the properties that carry CEL rules (x-kubernetes-validations)."""
    names: set[str] = set()
    if isinstance(schema, dict):
        for name, sub in schema.get("properties", {}).items():
            if isinstance(sub, dict) and "x-kubernetes-validations" in sub:
                names.add(name)
        for value in schema.values():
            names |= _cel_fields(value)
    elif isinstance(schema, list):
        for value in schema:
            names |= _cel_fields(value)
    return names


def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | set().union(*(_keys(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_keys(v) for v in value)) if value else set()
    return set()


@pytest.mark.parametrize("path, crd, kind", [(RAYCLUSTER, "rayclusters", "RayCluster"),
                                             (RAYJOB, "rayjobs", "RayJob")])
def test_kuberay_manifest_matches_kuberays_crd_schema(path, crd, kind):
    schema = _crd_schema(crd)
    manifest = _load(path)
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == kind
    assert _errors(manifest, crd) == []
    # CEL rules (x-kubernetes-validations) are not evaluated offline: use none of their fields.
    assert not _keys(manifest.get("spec")) & _cel_fields(schema["properties"]["spec"])
    name = manifest["metadata"]["name"]
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63, name


@pytest.mark.parametrize("breakage", ["wrong type", "unknown field", "missing required"])
def test_a_broken_raycluster_fails_the_crd_schema(breakage):
    manifest = _load(RAYCLUSTER)
    workers = manifest["spec"]["workerGroupSpecs"][0]
    if breakage == "wrong type":
        workers["replicas"] = "two"
        where = "spec.workerGroupSpecs.0.replicas"
    elif breakage == "unknown field":
        workers["replica"] = workers.pop("replicas")
        where = "spec.workerGroupSpecs.0"
    else:
        del workers["groupName"]
        where = "spec.workerGroupSpecs.0"
    errors = _errors(manifest, "rayclusters")
    assert errors and any(e.startswith(where + ":") for e in errors), errors


def test_a_broken_rayjob_fails_the_crd_schema():
    manifest = _load(RAYJOB)
    manifest["spec"]["clusterSelector"] = {"ray.io/cluster": 1}
    manifest["spec"]["entrypoint"] = ["hz-ray", "run"]
    errors = _errors(manifest, "rayjobs")
    assert {e.split(":", 1)[0] for e in errors} >= {"spec.clusterSelector.ray.io/cluster",
                                                    "spec.entrypoint"}, errors


def _head(cluster: dict[str, Any]) -> dict[str, Any]:
    return cluster["spec"]["headGroupSpec"]["template"]["spec"]


def test_rayjob_runs_the_configmap_job_on_the_raycluster():
    cluster, job, configmap = _load(RAYCLUSTER), _load(RAYJOB), _load(CONFIGMAP)
    spec = job["spec"]
    assert "rayClusterSpec" not in spec
    assert spec["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    runs = [c for c in check_lines([spec["entrypoint"]], "rayjob.yaml entrypoint")
            if c.path == ("hz-ray", "run")]
    assert len(runs) == 1, "the entrypoint must be one `hz-ray run`"
    run = runs[0]
    assert run.flag("--address") == "auto"
    head = _head(cluster)
    (container,) = [c for c in head["containers"] if c["name"] == "ray-head"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in head["volumes"]}
    config_dir, key = run.arg().rsplit("/", 1)
    volume = volumes[mounts[config_dir]["name"]]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert key in configmap["data"], f"the ConfigMap has no key {key}"
    run_dir = run.flag("--run-dir")
    writable = [p for p, m in mounts.items() if not m.get("readOnly")
                and run_dir.startswith(p.rstrip("/") + "/")]
    assert writable, f"--run-dir {run_dir} is not on a writable volume of the head pod"


def test_kuberay_images_and_versions_match_the_dockerfile():
    import ray

    cluster = _load(RAYCLUSTER)
    assert cluster["spec"]["rayVersion"] == ray.__version__
    containers = _head(cluster)["containers"] + [
        c for g in cluster["spec"]["workerGroupSpecs"] for c in g["template"]["spec"]["containers"]]
    images = {c["image"] for c in containers}
    assert len(images) == 1, f"head and workers must run one image: {images}"
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    base = re.search(r"^FROM\s+(\S+)", dockerfile, re.M)
    assert base and base.group(1) == f"rayproject/ray:{ray.__version__}-py311"
    tags = {t for line in readme_commands(README) + comment_commands(DOCKERFILE)
            if line.startswith("docker build") for t in re.findall(r"-t\s+(\S+)", line)}
    assert tags == images, "the documented `docker build -t` must build the manifests' image"
    runs = [line for line in dockerfile.splitlines() if "pip install" in line]
    assert runs and all("-c constraints.txt" in line for line in runs)
    ignore = (KUBERAY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    for line in dockerfile.splitlines():
        if line.startswith("COPY"):
            for source in line.split()[1:-1]:
                if not source.startswith("--"):
                    assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
                    assert f"!{source}" in ignore, f"Dockerfile.dockerignore drops {source}"
    for group in [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]:
        params = group.get("rayStartParams", {})
        if group.get("resources"):   # KubeRay refuses resources in both places
            assert not {"num-cpus", "num-gpus", "memory", "resources"} & set(params)
        assert "labels" not in params


def test_configmap_job_config_passes_hz_ray_validation():
    from hz_ray.backends.factory import check_config_against_backend_target
    from hz_ray.config_loading import config_from_yaml

    configmap = _load(CONFIGMAP)
    assert configmap["apiVersion"] == "v1" and configmap["kind"] == "ConfigMap"
    config = config_from_yaml(configmap["data"]["job.yaml"], "job-configmap.yaml job.yaml")
    check_config_against_backend_target(config)
    assert config.arms.slots >= 1


def test_kuberay_and_readme_commands_parse_and_apply_in_order():
    found: list[Checked] = []
    for path in (RAYCLUSTER, RAYJOB, CONFIGMAP, DOCKERFILE):
        found += check_lines(comment_commands(path), path.name)
    found += check_lines(readme_commands(README), "cluster_configs/README.md")
    paths = [c.path for c in found]
    assert ("ray", "job", "submit") in paths and ("hz-ray", "run") in paths
    for checked in found:
        if checked.path == ("hz-ray", "run"):
            assert checked.flag("--address") == "auto", checked.where
    applied = [line.split("-f", 1)[1].strip() for line in readme_commands(README)
               if line.startswith("kubectl apply")]
    order = [f"cluster_configs/kuberay/{name}.yaml"
             for name in ("job-configmap", "raycluster", "rayjob")]
    assert applied == order, f"README applies {applied}; the order must be {order}"
