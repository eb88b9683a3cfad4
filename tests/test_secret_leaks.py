"""No secret leaves the program in clear, and every Command that touches one marks its output secret.

1. A throwaway stack ``leaktest``, written into a copy of the program's files (never into the
   repository, where other tests list the stacks) (phase ``database``: the legacy password, both S3 key pairs,
   the keytab, the log migration and the database verifier are all in play) whose EVERY secret
   is a sentinel: random per run, so a hit can only come from this run.  ``fernetKey`` and
   ``sshPrivateKey`` must still parse, so a fresh Fernet key and a fresh OpenSSH key are their
   own sentinels; the generated secrets (the mock runtime's RandomPassword/RandomBytes values)
   and the passphrase are sentinels too.  ``python -m tools.preview`` runs as the operator runs
   it (a subprocess, passphrase in its environment), with and without ``--out``.  Searched, in
   plain, hex, base64 (any alignment, both alphabets), URL-encoded and JSON-escaped forms:
   stdout, stderr, every file under ``--out``, and every file created or modified anywhere
   under /tmp and the repository while it ran (ctime newer than a marker file; .git and .venv
   skipped; pytest captures output in unlinked temp files, which no directory walk sees).
2. Every Command of every stack, and of every migration phase of ``search``, logs stderr only
   (stderr is the log and never carries a secret; stdout is the one secret channel), and one
   that carries a secret (stdin) or outputs one (its stdout flows into a secret) marks stdout
   and stderr secret (https://github.com/pulumi/pulumi-command/issues/401).
   tests/test_remote_commands.py checks the conftest stacks' Commands; this covers the fleet.

The scanning helpers (:class:`Sentinels`, :class:`Marker`) are reused by
tests/integration/test_secret_leaks_scripts.py.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import pytest
import yaml
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from components import config
from tests.conftest import copy_tree, rendered
from tests.test_migration_phases import run_phase
from tools import mockrun, preview, stackconfig

ROOT = stackconfig.ROOT
LEAK_STACK = "leaktest"
COMMAND_TYPES = ("command:remote:Command", "command:local:Command")
SKIP_DIRS = frozenset({".git", ".venv"})
MIN_NEEDLE = 12  # shorter encoded fragments could match by chance


# --- sentinels and their encoded forms ------------------------------------------------------

def _base64_cores(data: bytes) -> dict[str, bytes]:
    """The part of base64(... + data + ...) that only ``data`` decides, for each of the three
    alignments and both alphabets: a value base64-encoded inside a larger blob (a Kubernetes
    Secret's data, a keytab) still shows one of these."""
    out = {}
    n = len(data)
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + data)
        first = -(-8 * pad // 6)  # first character made only of data bits
        last = (8 * (pad + n)) // 6  # characters before this one end inside data
        core = encoded[first:last]
        out[f"base64@{pad}"] = core
        out[f"base64url@{pad}"] = core.replace(b"+", b"-").replace(b"/", b"_")
    return out


def leak_forms(value: str | bytes) -> dict[str, bytes]:
    """Every form in which ``value`` could leak: plain, base64, URL-encoded, JSON-escaped, hex."""
    raw = value.encode() if isinstance(value, str) else value
    forms = {"plain": raw, "hex": raw.hex().encode()}
    forms.update(_base64_cores(raw))
    if isinstance(value, str):
        forms["url"] = urllib.parse.quote(value, safe="").encode()
        forms["url-path"] = urllib.parse.quote(value).encode()
        forms["url-form"] = urllib.parse.quote_plus(value).encode()
        forms["json"] = json.dumps(value)[1:-1].encode()
    else:
        forms.pop("plain")
        forms["raw"] = raw
    return {form: data for form, data in forms.items() if len(data) >= MIN_NEEDLE}


@dataclass
class Sentinels:
    """Named secret values; ``hits(data)`` names every (secret, form) found in ``data``."""

    values: dict[str, str | bytes]
    needles: list[tuple[str, str, bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        seen: set[bytes] = set()
        for name, value in self.values.items():
            assert len(value) >= MIN_NEEDLE, f"sentinel {name} is too short to be searched for safely"
            for form, data in leak_forms(value).items():
                if data not in seen:
                    seen.add(data)
                    self.needles.append((name, form, data))

    def hits(self, data: bytes) -> list[str]:
        return [f"{name} ({form})" for name, form, needle in self.needles if needle in data]

    def hits_in_files(self, paths: Iterable[Path]) -> dict[str, list[str]]:
        found = {}
        for path in paths:
            try:
                data = path.read_bytes()
            except OSError:  # removed (or unreadable) since it was listed
                continue
            hits = self.hits(data)
            if hits:
                found[str(path)] = hits
        return found


class Marker:
    """A marker file; ``changed_files`` lists regular files whose inode changed after it was made
    (ctime: created, written, or copied with an old mtime), like ``find ROOT -newer MARKER``.
    File timestamps come from the kernel's coarse clock, hence a file and not time.time_ns()."""

    def __init__(self, directory: str = "/tmp"):
        fd, name = tempfile.mkstemp(prefix="leak-marker-", dir=directory)
        os.close(fd)
        self.path = Path(name)
        self.since_ns = self.path.stat().st_ctime_ns

    def changed_files(self, roots: Iterable[Path]) -> list[Path]:
        found: list[Path] = []

        def walk(directory: str) -> None:
            try:
                entries = list(os.scandir(directory))
            except OSError:  # vanished or unreadable meanwhile
                return
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if entry.name not in SKIP_DIRS:
                            walk(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        if entry.stat(follow_symlinks=False).st_ctime_ns >= self.since_ns and entry.path != str(self.path):
                            found.append(Path(entry.path))
                except OSError:
                    continue

        for root in roots:
            walk(str(root))
        return found

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


# --- the throwaway stack --------------------------------------------------------------------

def new_ssh_private_key() -> str:
    """A fresh OpenSSH ed25519 private key (sshPrivateKey must parse)."""
    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()


def ssh_key_sentinels(key: str) -> dict[str, str]:
    """The key, its body joined, and each body line that differs from another key's (the first
    lines are the same for every ed25519 key: finding them proves nothing)."""
    other = set(new_ssh_private_key().splitlines())
    body = [line for line in key.splitlines() if not line.startswith("-----")]
    out = {"sshPrivateKey": key, "sshPrivateKey body": "".join(body)}
    out.update({f"sshPrivateKey line {i}": line for i, line in enumerate(body)
                if line not in other and len(line) >= MIN_NEEDLE})
    return out


def sentinel_secrets() -> dict[str, Any]:
    run_id = secrets.token_hex(4)

    def sentinel(what: str) -> str:
        return f"LEAKSENTINEL-{what}-{run_id}-{secrets.token_hex(8)}"

    return {
        "oidcClientSecret": sentinel("oidc"),
        "webserverSecretKey": sentinel("webserver-secret-key"),
        "fernetKey": Fernet.generate_key().decode(),  # must be a Fernet key: its value is the sentinel
        "sshPrivateKey": new_ssh_private_key(),  # must parse: the key itself is the sentinel
        "legacyDbPassword": sentinel("legacy-db"),
        "privateValues": {"config": {"connections": {"wikimedia_enterprise": {
            "username": sentinel("private-user"), "password": sentinel("private-password"),
        }}}},
    }


def write_stack(values: Mapping[str, Any], passphrase: str, root: Path) -> Path:
    """``root``/Pulumi.leaktest.yaml: search's legacy instance in phase database, every secret
    encrypted with ``passphrase`` as `pulumi config set --secret` would (tools.stackconfig.set_secret)."""
    search = yaml.safe_load((root / "Pulumi.search.yaml").read_text())["config"]
    doc = {"config": {
        "airflow:instance": LEAK_STACK,
        "airflow:phase": "database",
        "airflow:legacy": search["airflow:legacy"],
    }}
    stack_file = root / f"Pulumi.{LEAK_STACK}.yaml"
    stack_file.write_text("# throwaway stack of tests/test_secret_leaks.py\n" + yaml.safe_dump(doc, sort_keys=False))
    for key, value in values.items():
        stackconfig.set_secret(LEAK_STACK, key, json.dumps(value) if isinstance(value, dict) else value, passphrase, root=root)
    return stack_file


def config_sentinels(values: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for key, value in values.items():
        if key == "privateValues":
            leaves = value["config"]["connections"]["wikimedia_enterprise"]
            out.update({f"privateValues.{k}": v for k, v in leaves.items()})
        elif key == "sshPrivateKey":
            out.update(ssh_key_sentinels(value))
        else:
            out[key] = value
    return out


def generated_secrets(mon: mockrun.RecordingMonitor) -> dict[str, str]:
    """The mock runtime's RandomPassword/RandomBytes values (tools/mockrun.py Mocks), as the
    MockMonitor recorded them, plus the Fernet form the program derives from RandomBytes."""
    from components.generated_secrets import fernet_from_base64

    out = {}
    for urn, res in mon.resources.items():
        reg = mon.registrations.get(urn)
        if reg is None or not reg.type.startswith("random:"):
            continue
        for key in ("result", "base64", "hex"):
            if key in res.state:
                out[f"{reg.name}.{key}"] = res.state[key]
        if "base64" in res.state:
            out[f"{reg.name}.fernet"] = fernet_from_base64(res.state["base64"])
    return out


def secret_leaf_texts(mon: mockrun.RecordingMonitor) -> list[str]:
    """The text of every secret value in any resource's inputs or any registered outputs."""
    texts: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, mockrun.SecretLeaf):
            texts.append(json.dumps(mockrun.unmasked(node.value)))
        elif isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for reg in mon.registered():
        walk(reg.inputs)
    for outputs in mon.outputs.values():
        walk(outputs)
    return texts


@dataclass
class LeakRun:
    stack_file: Path
    sentinels: Sentinels
    config_names: list[str]
    generated_names: list[str]
    tree: subprocess.CompletedProcess
    out: subprocess.CompletedProcess
    out_files: list[Path]
    changed: list[Path]
    secret_texts: list[str]


@pytest.fixture(scope="module")
def leak_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LeakRun]:
    tree = copy_tree(tmp_path_factory.mktemp("leak-tree") / "tree")
    passphrase = f"LEAKSENTINEL-passphrase-{secrets.token_hex(12)}"
    values = sentinel_secrets()
    out_dir = tmp_path_factory.mktemp("leak-preview-out")
    marker = Marker()
    try:
        # written after the marker, so the stack file itself is searched: ciphertext only
        stack_file = write_stack(values, passphrase, tree)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_CONFIG_PASSPHRASE")}
        env.update(PULUMI_CONFIG_PASSPHRASE=passphrase, PYTHONPATH=str(tree))
        cli = [sys.executable, "-m", "tools.preview", "-s", LEAK_STACK]
        shown = subprocess.run(cli, cwd=tree, env=env, capture_output=True, timeout=180, check=False)
        out = subprocess.run([*cli, "--out", str(out_dir)], cwd=tree, env=env, capture_output=True, timeout=180,
                             check=False)
        # the same render in this process (tools.preview.render, the stack read from the copy),
        # for the generated values and the secret leaves
        sc = stackconfig.load(LEAK_STACK, passphrase, root=tree)
        render = mockrun.run_program(sc.project, LEAK_STACK, dict(sc.config), list(sc.secret_keys))
        assert render.error is None, render.error
        mon = render.monitor
        changed = marker.changed_files([Path("/tmp"), ROOT])
        named = {"passphrase": passphrase, **config_sentinels(values)}
        generated = generated_secrets(mon)
        yield LeakRun(
            stack_file=stack_file,
            sentinels=Sentinels({**named, **generated}),
            config_names=list(named),
            generated_names=list(generated),
            tree=shown,
            out=out,
            out_files=sorted(p for p in out_dir.rglob("*") if p.is_file()),
            changed=changed,
            secret_texts=secret_leaf_texts(mon),
        )
    finally:
        marker.remove()


def _shown(run: subprocess.CompletedProcess) -> str:
    return f"exit {run.returncode}; stderr: {run.stderr.decode(errors='replace')[-2000:]}"


@pytest.mark.processes
def test_every_sentinel_reaches_the_program_as_a_secret(leak_run):
    """The positive control: the sentinels were decrypted and used, so finding none means something."""
    for run in (leak_run.tree, leak_run.out):
        assert run.returncode == 0, _shown(run)
        assert b"Secrets: checked with the passphrase" in run.stdout, "the preview decrypted the sentinels"
        assert mockrun.SECRET.encode() in run.stdout, "secrets show as the placeholder"
    joined = "\n".join(leak_run.secret_texts)
    for name in leak_run.config_names:
        if name in ("passphrase", "sshPrivateKey body"):  # given to the CLI / not a value as such
            continue
        value = leak_run.sentinels.values[name]
        assert json.dumps(value)[1:-1] in joined, f"{name} is not a secret input of any resource"
    assert {n.rsplit(".", 1)[0] for n in leak_run.generated_names} >= {
        f"{LEAK_STACK}-airflow-s3-access-key", f"{LEAK_STACK}-airflow-s3-secret-key",
        f"{LEAK_STACK}-postgresql-s3-access-key", f"{LEAK_STACK}-postgresql-s3-secret-key",
    }, f"generated secrets: {leak_run.generated_names}"
    for name in leak_run.generated_names:
        if name.endswith(".result"):
            assert leak_run.sentinels.values[name] in joined, f"generated {name} is not a secret input of any resource"


@pytest.mark.processes
def test_preview_stdout_and_stderr_hold_no_secret_in_any_form(leak_run):
    for label, run in (("tree", leak_run.tree), ("--out", leak_run.out)):
        for stream in ("stdout", "stderr"):
            hits = leak_run.sentinels.hits(getattr(run, stream))
            assert hits == [], f"preview ({label}) {stream} shows secrets: {hits}"


@pytest.mark.processes
def test_rendered_files_hold_no_secret_in_any_form(leak_run):
    kinds = {p.parent.name for p in leak_run.out_files}
    assert {"commands", "helm", "manifests"} <= kinds, f"--out wrote scripts, values and manifests: {kinds}"
    hits = leak_run.sentinels.hits_in_files(leak_run.out_files)
    assert hits == {}, f"rendered files show secrets: {hits}"


@pytest.mark.processes
def test_nothing_written_under_tmp_or_the_repository_holds_a_secret(leak_run):
    changed = set(leak_run.changed)
    assert leak_run.stack_file in changed, "the scan sees the stack file written during the run"
    assert set(leak_run.out_files) <= changed, "the scan sees every file the preview wrote"
    hits = leak_run.sentinels.hits_in_files(sorted(changed))
    assert hits == {}, f"files written during the run show secrets: {hits}"


# --- Commands across the fleet and the migration phases -----------------------------------------

FLEET = [s for s in stackconfig.stacks() if s != LEAK_STACK]
PHASE_RUNS = [f"search:phase={phase}" for phase in config.PHASES]
# How each Command touches a secret, by name suffix: every Command must be listed, so a new one
# is classified on purpose (and a change in its data flow is noticed below).
SECRET_FLOW = {
    "-rgw-airflow-user": "stdin",       # the S3 key pair for radosgw-admin
    "-rgw-postgresql-user": "stdin",
    "-kerberos-keytab": "stdout",       # its stdout IS the keytab
    "-log-migration-first-sync": "stdin",  # S3 keys for s3cmd
    "-log-migration-final-sync": "stdin",
    "-log-migration-verify": "stdin",
    "-log-migration-stop-legacy": None,  # puppet/systemctl: no secret in or out
}


def monitor_for(which: str) -> mockrun.RecordingMonitor:
    if which.startswith("search:phase="):
        return run_phase(which.split("=", 1)[1])
    return rendered(which)


def secret_flow(cmd: mockrun.Registration, secret_texts: list[str]) -> str | None:
    """``stdin`` if the Command gets input on stdin, ``stdout`` if its output flows into a secret
    (the mock's stdout is ``(stdout of NAME)``, tools/mockrun.py), else None."""
    stdout_mark = json.dumps(f"(stdout of {cmd.name})")[1:-1]
    if "stdin" in cmd.inputs:
        return "stdin"
    if any(stdout_mark in text for text in secret_texts):
        return "stdout"
    return None


def test_the_fleet_is_thirteen_stacks():
    assert len(FLEET) >= 13, f"stacks: {FLEET}"  # the 13 reference instances, and any new one


@pytest.mark.parametrize("which", FLEET + PHASE_RUNS)
def test_every_command_logs_stderr_only_and_one_touching_a_secret_marks_its_output_secret(which):
    mon = monitor_for(which)
    commands = [r for r in mon.registered() if r.type in COMMAND_TYPES]
    if which in FLEET:  # phase webserver runs no Command
        assert commands, f"{which} has no Commands"
    secret_texts = secret_leaf_texts(mon)
    clear = "\n".join(json.dumps(mockrun.masked(r.inputs)) for r in mon.registered())
    clear += "\n".join(json.dumps(mockrun.masked(o)) for o in mon.outputs.values())
    for cmd in commands:
        assert isinstance(cmd.inputs.get("connection"), mockrun.SecretLeaf), \
            f"{which}: {cmd.name}: the connection holds the SSH private key; it must be secret"
        elsewhere = [p for k, v in cmd.inputs.items() if k not in ("connection", "stdin") for p in mockrun.secret_paths(v, k)]
        assert elsewhere == [], f"{which}: {cmd.name} gets secrets outside stdin: {elsewhere}"
        suffix = next((s for s in SECRET_FLOW if cmd.name.endswith(s)), None)
        assert suffix is not None, f"{which}: Command {cmd.name} is not classified in SECRET_FLOW"
        flow = secret_flow(cmd, secret_texts)
        assert flow == SECRET_FLOW[suffix], f"{which}: {cmd.name} touches a secret via {flow}, expected {SECRET_FLOW[suffix]}"
        # "stdout"/"stdoutAndStderr" would log the secret channel (a keytab, say); "none" would hide
        # the progress and the delete-time instructions the operator needs
        assert cmd.inputs.get("logging") == "stderr", \
            f"{which}: {cmd.name} must log stderr only, not {cmd.inputs.get('logging')!r}"
        if flow is None:
            continue
        assert {"stdout", "stderr"} <= set(cmd.additional_secret_outputs), \
            f"{which}: {cmd.name} ({flow}) must mark stdout and stderr secret"
        if flow == "stdin":
            assert isinstance(cmd.inputs["stdin"], mockrun.SecretLeaf), f"{which}: {cmd.name}: stdin must be secret"
        assert f"(stdout of {cmd.name})" not in clear, f"{which}: the output of {cmd.name} appears outside a secret"


def test_every_classified_command_occurs_in_the_fleet_or_the_phases():
    names = {r.name for which in FLEET + PHASE_RUNS for r in monitor_for(which).registered() if r.type in COMMAND_TYPES}
    unused = [suffix for suffix in SECRET_FLOW if not any(n.endswith(suffix) for n in names)]
    assert unused == [], f"SECRET_FLOW lists Commands no stack or phase has: {unused}"
    assert len(names) >= 13 * 3, f"every stack has its RGW users and keytab: {sorted(names)}"
