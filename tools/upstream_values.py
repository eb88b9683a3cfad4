"""The platform's public values, copied verbatim and traceable to the commit they come from.

    python -m tools.upstream_values refresh --repo GIT_DIR [--commit SHA]
    python -m tools.upstream_values check

The program deploys what helmfile deploys today (issue 12, part 6), so its copies of the shared
values are the files of ``wikimedia/operations-deployment-charts`` themselves, byte for byte:

- ``components/chart_values/_airflow_common_/*.yaml``: the layers every instance's helmfile reads
  (``values-dse-k8s-eqiad.yaml``, ``values-analytics-{production,test}.yaml``), loaded by
  components/airflow_values.py;
- ``tests/upstream/helmfile.d/dse-k8s-services/{airflow,postgresql-airflow}-<x>/``: each running
  instance's own helmfile and values, the "today's values" the takeover tests compare with.

``SOURCE.yaml`` next to each copy names the repository, the commit and, per file, its path there
and its git blob id (``git rev-parse <commit>:<path>`` prints the same id), so that anyone with a
clone can check a copy with ``git cat-file -p <blob>``; ``check`` recomputes every id offline and
the test suite runs it.  ``refresh`` rewrites the copies from a clone (``fetch`` of the
repository gives one) and the Pulumi.yaml defaults of the site keys that mirror a common value
(``SITE_KEYS``), keeping that file's comments.  Symlinks in a helmfile directory (every instance
links the ``_airflow_common_`` files) are recorded as the file they point to.
"""

from __future__ import annotations

import sys

from tools import cli

if __name__ == "__main__":  # first thing: the guard (tools/cli.py) covers the imports below too
    sys.exit(cli.run_module("tools.upstream_values"))

import argparse
import hashlib
import posixpath
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

# libyaml's loader when PyYAML has it (its wheels do): the same data as SafeLoader, several
# times faster on the snapshot's large values files (read for every release, in every test).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load(text: str) -> Any:
    return yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader


ROOT = Path(__file__).resolve().parent.parent
REPO = "wikimedia/operations-deployment-charts"
SERVICES = "helmfile.d/dse-k8s-services"
COMMON_DIR = ROOT / "components" / "chart_values" / "_airflow_common_"
SNAPSHOT_DIR = ROOT / "tests" / "upstream"
COMMON_FILES = ("values-dse-k8s-eqiad.yaml", "values-analytics-production.yaml", "values-analytics-test.yaml")
ENVIRONMENT = "dse-k8s-eqiad"
RELEASE = "production"

# Pulumi.yaml keys whose project default is a value of _airflow_common_/values-dse-k8s-eqiad.yaml
# (components/airflow_values.common_values writes the key back at that path).
SITE_KEYS: dict[str, tuple[str, ...]] = {
    "dockerRegistry": ("docker", "registry"),
    "imageVersion": ("app", "version"),
    "smtpHost": ("config", "airflow", "config", "smtp", "smtp_host"),
    "xcomSidecarTag": ("config", "airflow", "local_settings", "xcom_sidecar", "tag"),
    "rgwEndpoint": ("config", "connections", "s3_dpe", "extra", "endpoint_url"),
    "rgwRegion": ("config", "connections", "s3_dpe", "extra", "region_name"),
    "idpServer": ("config", "oidc", "idp_server"),
    "gitsyncImageTag": ("gitsync", "image_tag"),
}
_VALUES_LINE = re.compile(r'^\s*-\s*"(values-[^"]+\.yaml)"', re.M)


def blob_id(data: bytes) -> str:
    """git's object id of a file's content (``git hash-object``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def dig(node: Any, path: Iterable[str]) -> Any:
    for key in path:
        node = node[key]
    return node


# --- reading a clone ----------------------------------------------------------------------

@dataclass(frozen=True)
class Clone:
    git_dir: Path
    commit: str

    def _git(self, *args: str) -> bytes:
        try:
            return subprocess.run(["git", "--git-dir", str(self.git_dir), *args], check=True,
                                  capture_output=True).stdout
        except subprocess.CalledProcessError as exc:
            raise cli.UsageError(f"git {' '.join(args)}: {exc.stderr.decode(errors='replace').strip()}") from None

    def entry(self, path: str) -> tuple[str, str] | None:
        """(mode, blob id) of a path at the commit, None when absent."""
        out = self._git("ls-tree", self.commit, "--", path).decode()
        if not out.strip():
            return None
        mode, _kind, rest = out.split(" ", 2)
        return mode, rest.split("\t", 1)[0]

    def read(self, path: str) -> tuple[str, bytes]:
        """(path, content) following symlinks, as helmfile reads a values file."""
        for _ in range(8):
            found = self.entry(path)
            if found is None:
                raise cli.UsageError(f"{REPO}@{self.commit[:12]}: {path} does not exist")
            mode, blob = found
            data = self._git("cat-file", "blob", blob)
            if mode != "120000":
                return path, data
            path = posixpath.normpath(posixpath.join(posixpath.dirname(path), data.decode()))
        raise cli.UsageError(f"{path}: symlink loop")

    def instances(self) -> list[str]:
        names = self._git("ls-tree", "--name-only", self.commit, f"{SERVICES}/").decode().split()
        return sorted(n.rsplit("/", 1)[1][len("airflow-"):] for n in names if n.rsplit("/", 1)[1].startswith("airflow-"))


def release_layers(helmfile: str, release: str) -> list[str]:
    """The repository values files a helmfile's release reads, in helmfile's order."""
    names = []
    for name in _VALUES_LINE.findall(helmfile):
        name = name.replace("{{ .Environment.Name }}", ENVIRONMENT).replace("{{`{{ .Release.Name }}`}}", release)
        names.append(name)
    return names


# --- refresh ------------------------------------------------------------------------------

def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _source_doc(clone: Clone, what: str, files: dict[str, dict[str, Any]]) -> str:
    doc = {"repository": REPO, "commit": clone.commit, "what": what, "files": files}
    header = ("# Written by `python -m tools.upstream_values refresh`; checked by `... check` and the tests.\n"
              "# Each file here is the blob of `path` at `commit`: git cat-file -p <blob> prints it.\n")
    return header + yaml.safe_dump(doc, sort_keys=False, width=200)


def refresh(clone: Clone, stacks: list[str]) -> list[str]:
    notes = []
    files: dict[str, dict[str, Any]] = {}
    for name in COMMON_FILES:
        path, data = clone.read(f"{SERVICES}/_airflow_common_/{name}")
        _write(COMMON_DIR / name, data)
        files[name] = {"path": path, "blob": blob_id(data)}
    (COMMON_DIR / "SOURCE.yaml").write_text(_source_doc(clone, "the shared layers of every airflow release", files))
    snap: dict[str, dict[str, Any]] = {}
    running = clone.instances()
    for stack in stacks:
        if stack not in running:
            notes.append(f"{stack}: no helmfile.d/dse-k8s-services/airflow-{stack} at this commit (not running)")
            continue
        for release, helm_release in ((f"airflow-{stack}", RELEASE), (f"postgresql-airflow-{stack}", f"postgresql-airflow-{stack}")):
            base = f"{SERVICES}/{release}"
            _, helmfile = clone.read(f"{base}/helmfile.yaml")
            names = ["helmfile.yaml"] + release_layers(helmfile.decode(), helm_release)
            for name in names:
                if clone.entry(f"{base}/{name}") is None:
                    continue  # missingFileHandler: Warn (values.yaml is absent everywhere)
                path, data = clone.read(f"{base}/{name}")
                rel = f"{release}/{name}"
                local = local_copy(path)
                if not path.startswith(f"{SERVICES}/_airflow_common_/"):
                    _write(local, data)
                snap[rel] = {"path": path, "blob": blob_id(data)}
    _write(SNAPSHOT_DIR / "SOURCE.yaml", _source_doc(clone, "each running instance's helmfile and values", snap).encode())
    _update_project_defaults()
    return notes


def _update_project_defaults() -> None:
    from ruamel.yaml import YAML

    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 4096
    path = ROOT / "Pulumi.yaml"
    doc = rt.load(path.read_text())
    common = _load((COMMON_DIR / "values-dse-k8s-eqiad.yaml").read_text())
    for key, at in SITE_KEYS.items():
        doc["config"][key]["default"] = str(dig(common, at))
    with open(path, "w") as fh:
        rt.dump(doc, fh)


# --- today's values of a running release, from the snapshot --------------------------------

def snapshot_source() -> dict[str, Any]:
    return _load((SNAPSHOT_DIR / "SOURCE.yaml").read_text())


def release_files(release: str) -> list[Path]:
    """The snapshot's copies of the repository values files a release reads, in helmfile's order
    (a file the helmfile names but the repository lacks is skipped, as ``missingFileHandler: Warn``)."""
    files = snapshot_source()["files"]
    helm_release = RELEASE if release.startswith("airflow-") else release
    helmfile = (SNAPSHOT_DIR / SERVICES / release / "helmfile.yaml").read_text()
    out = []
    for name in release_layers(helmfile, helm_release):
        entry = files.get(f"{release}/{name}")
        if entry is not None:
            out.append(local_copy(entry["path"]))
    return out


def live_values(release: str, general: dict[str, Any], private: dict[str, Any],
                tail: dict[str, Any]) -> dict[str, Any]:
    """What ``helm get values`` prints for a release helmfile deployed at the snapshot's commit:
    its layers coalesced in helmfile's order (general, values.yaml, private, then the files).
    ``general`` and ``private`` stand for /etc/helmfile-defaults (puppet and the private repo),
    which are not public: the caller supplies them; ``tail`` is the helmfile's inline values."""
    from components.airflow_values import deep_merge

    values = deep_merge(general, private)
    for path in release_files(release):
        values = deep_merge(values, _load(path.read_text()) or {})
    return deep_merge(values, tail)


# --- check --------------------------------------------------------------------------------

def local_copy(upstream_path: str) -> Path:
    """Where the copy of a file is: the program's for the airflow common layers, else the snapshot's."""
    if upstream_path.startswith(f"{SERVICES}/_airflow_common_/"):
        return COMMON_DIR / posixpath.basename(upstream_path)
    return SNAPSHOT_DIR / upstream_path


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def check() -> list[str]:
    """Every copy's content against the blob id its SOURCE.yaml records; [] when all match."""
    problems = []
    for source in (COMMON_DIR / "SOURCE.yaml", SNAPSHOT_DIR / "SOURCE.yaml"):
        doc = _load(source.read_text())
        for rel, entry in doc["files"].items():
            local = local_copy(entry["path"])
            if not local.exists():
                problems.append(f"{rel}: no copy of {entry['path']}")
            elif blob_id(local.read_bytes()) != entry["blob"]:
                problems.append(f"{_shown(local)}: differs from {entry['path']}@{doc['commit'][:12]} (blob {entry['blob']})")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.upstream_values", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("refresh", help="copy the values of a commit of deployment-charts")
    r.add_argument("--repo", type=Path, required=True, help="git directory of a clone of " + REPO)
    r.add_argument("--commit", default="HEAD")
    sub.add_parser("check", help="every copy matches the blob its SOURCE.yaml names")
    cli.add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.cmd == "refresh":
        commit = subprocess.run(["git", "--git-dir", str(args.repo), "rev-parse", args.commit],
                                capture_output=True, text=True)
        if commit.returncode != 0:
            raise cli.UsageError(f"--repo {args.repo} --commit {args.commit}: {commit.stderr.strip()}")
        stacks = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in ROOT.glob("Pulumi.*.yaml"))
        for note in refresh(Clone(args.repo, commit.stdout.strip()), stacks):
            print(note)
        print(f"copied {REPO}@{commit.stdout.strip()}")
        return 0
    problems = check()
    for line in problems:
        print(line)
    print("all copies match their recorded blobs" if not problems else f"{len(problems)} copies differ")
    return 1 if problems else 0
