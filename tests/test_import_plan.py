"""`./dev import-plan`: the `pulumi import --file` plan of a stack, checked against its render.

The file is read back the way the CLI reads it (pulumi/pulumi pkg/cmd/pulumi/operations/import.go,
``parseImportFile``): a parent or provider name resolves in ``nameTable`` or among the file's own
entries, and each entry's URN is built from its parent's type chain and its name, so it must be
the URN the program registers."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_command
from tools import cli, import_plan, preview, stackconfig

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "airflow"


def run_cli(*args, env=None):
    """`python -m tools.import_plan args`, in this process (test_runs_under_the_guard: the real one)."""
    if env is None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_CONFIG_PASSPHRASE")}
    return run_command("tools.import_plan", *args, env=env, cwd=ROOT)


def plan_of(stack):
    run = preview.render(stack, None)
    return run, import_plan.build(run, stack)


def resolve(doc, stack):
    """name -> URN for every entry, as parseImportFile computes them; fails on what it rejects."""
    table = doc.get("nameTable") or {}
    entries = doc["resources"]
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)), "ambiguous names"
    urns = dict(table)
    pending = list(entries)
    while pending:
        progressed = False
        for entry in list(pending):
            parent = entry.get("parent")
            if parent and parent not in urns:
                assert parent in names, f"{entry['name']}: parent {parent} resolves nowhere"
                continue
            if parent:
                parent_type = urns[parent].split("::")[2]
                qualified = f"{parent_type}${entry['type']}"
            else:
                qualified = entry["type"]
            urn = f"urn:pulumi:{stack}::{PROJECT}::{qualified}::{entry['name']}"
            assert urn not in urns.values(), f"{entry['name']}: ambiguous URN"
            urns[entry["name"]] = urn
            pending.remove(entry)
            progressed = True
        assert progressed, "parents form a cycle"
    return urns


def check_plan(stack, run, plan):
    doc = json.loads(json.dumps(plan.document()))  # what the file holds
    regs = {r.urn: r for r in run.monitor.registered()}
    urns = resolve(doc, stack)
    entries = {e["name"]: e for e in doc["resources"]}

    # exactly the managed Kubernetes objects and the buckets of the render
    managed = {r.urn for r in regs.values()
               if r.custom and not r.read and not r.type.startswith("pulumi:providers:")
               and (r.type.startswith("kubernetes:") or r.type == import_plan.BUCKET_TYPE)}
    imported = {urns[e["name"]] for e in doc["resources"] if "id" in e}
    assert imported == managed
    assert not any(regs[u].type.startswith(("command:", "random:")) for u in imported)
    assert any(r.read for r in regs.values())  # reads exist and are not in the plan

    for entry in doc["resources"]:
        reg = regs[urns[entry["name"]]]  # every URN the import builds is the program's
        assert reg.type == entry["type"]
        # its parent and provider are the program's, by name through the file's resolution
        assert (urns[entry["parent"]] if "parent" in entry else run.monitor.stack_urn) == reg.parent
        if "provider" in entry:
            provider = entries[entry["provider"]]
            assert provider["type"].startswith("pulumi:providers:") and "id" not in provider
            assert reg.provider.rsplit("::", 1)[0] == urns[entry["provider"]]
        elif "id" in entry:
            assert not reg.provider  # no resource falls back to a default provider silently
        if entry.get("component"):
            assert not reg.custom and "id" not in entry
        if entry["type"].startswith("pulumi:providers:"):
            assert "id" not in entry and not entry.get("component")
            want = {k: v for k, v in reg.inputs.items() if k not in plan.omitted_inputs.get(reg.name, [])}
            if entry["type"] == import_plan.AWS_PROVIDER:
                # the pair stays out; the provider reads with its user's profile instead
                assert plan.profiles[reg.name] in import_plan.handover.s3_import_profiles(stack).values(), reg.name
                want["profile"] = reg.name
            assert entry["inputs"] == want

    # ids as specified
    instance = stack
    for entry in doc["resources"]:
        if "id" not in entry:
            continue
        reg = regs[urns[entry["name"]]]
        if reg.type == preview.RELEASE_TYPE:
            assert entry["id"] == f"airflow-{instance}/production"
        elif reg.type == import_plan.BUCKET_TYPE:
            assert entry["id"] == reg.inputs["bucket"]
            assert entry["id"] in (f"logs.airflow-{instance}.dse-k8s-eqiad", f"postgresql-airflow-{instance}.dse-k8s-eqiad")
        else:
            assert entry["id"] == f"airflow-{instance}/{reg.inputs['metadata']['name']}"
    return doc


@pytest.mark.parametrize("stack", ["search", "test-k8s"])
def test_plan_lists_exactly_the_managed_objects_with_their_ids(stack):
    run, plan = plan_of(stack)
    doc = check_plan(stack, run, plan)
    ids = {e["id"] for e in doc["resources"] if "id" in e}
    assert f"airflow-{stack}/production" in ids
    assert f"airflow-{stack}/postgresql-airflow-{stack}" in ids  # the CNPG Cluster
    # the explicit providers are declared with the program's inputs: the deploy kubeconfig
    k8s = [e for e in doc["resources"] if e["type"] == "pulumi:providers:kubernetes"]
    assert len(k8s) == 1 and k8s[0]["inputs"]["kubeconfig"] == f"/etc/kubernetes/airflow-{stack}-deploy-dse-k8s-eqiad.config"
    assert k8s[0]["version"]
    excluded = {t for t, _, _ in plan.excluded}
    assert excluded <= {"command:remote:Command", "random:index/randomPassword:RandomPassword", "random:index/randomBytes:RandomBytes"}
    assert "command:remote:Command" in excluded


def test_file_holds_no_secret_and_round_trips(tmp_path):
    out = tmp_path / "plan.json"
    proc = run_cli("-s", "search", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    doc = json.loads(text)
    assert json.loads(json.dumps(doc)) == doc
    run, plan = plan_of("search")
    assert doc == json.loads(json.dumps(plan.document()))
    check_plan("search", run, plan)
    # the aws providers' generated keys are left out, and the file says so
    for entry in doc["resources"]:
        if entry["type"] == "pulumi:providers:aws":
            assert "accessKey" not in entry["inputs"] and "secretKey" not in entry["inputs"]
    assert any("accessKey, secretKey" in line for line in doc["comment"])
    assert "[secret]" not in text
    # one stdout line per entry and per excluded resource, then the total and the file
    lines = proc.stdout.splitlines()
    assert len(lines) == len(plan.entries) + len(plan.excluded) + 2
    assert "kubernetes:helm.sh/v3:Release search-airflow-release: import id=airflow-search/production parent=search-airflow provider=search-k8s-deploy" in lines
    assert lines[-1] == f"Wrote {out}"
    # a second run replaces the file
    assert run_cli("-s", "search", "--out", str(out)).returncode == 0
    assert json.loads(out.read_text()) == doc


def test_unknown_stack_is_one_line_exit_2():
    proc = run_cli("-s", "no-such-stack")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: unknown stack 'no-such-stack'")


def test_out_directory_is_refused_before_rendering(tmp_path):
    proc = run_cli("-s", "search", "--out", str(tmp_path))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == f"error: --out {tmp_path}: is a directory; give a file path\n"
    missing = tmp_path / "nope" / "plan.json"
    proc = run_cli("-s", "search", "--out", str(missing))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert not missing.parent.exists()


def test_every_stack_gets_a_plan(tmp_path):
    done = 0
    for stack in stackconfig.stacks():
        if stack.startswith("zz-broken-"):
            continue  # test_preview.py's broken_stack_files, present while a concurrent run uses them
        out = io.StringIO()
        code = cli.run(lambda argv: import_plan.main(argv, stdout=out), ["-s", stack, "--out", str(tmp_path / f"{stack}.json")])
        assert code == 0, stack
        done += 1
        doc = json.loads((tmp_path / f"{stack}.json").read_text())
        run, plan = plan_of(stack)
        check_plan(stack, run, plan)
        assert sum(1 for e in doc["resources"] if "id" in e) >= 12, stack
    assert done >= 13


@pytest.mark.processes
def test_runs_under_the_guard():
    from tests.test_cli_guard import BUG_IN_STACKCONFIG_LOAD, BUG_LINE, run_module

    proc = run_module("tools.import_plan", "-s", "search", patch=BUG_IN_STACKCONFIG_LOAD)
    assert (proc.returncode, proc.stderr) == (1, BUG_LINE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_CONFIG_PASSPHRASE")}
    proc = subprocess.run([sys.executable, "-m", "tools.import_plan", "-s", "search", "--out"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)  # the real process
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == ("error: python -m tools.import_plan: argument --out: expected one argument "
                           "(see python -m tools.import_plan --help)\n")


# --- --import: the buckets read with their users' key pairs --------------------------------

FAKE_PULUMI = """#!/usr/bin/env python3
import json, os, stat, sys
log = os.environ["FAKE_PULUMI_LOG"]
pairs = json.loads(os.environ["FAKE_PULUMI_PAIRS"])
if sys.argv[1:3] == ["config", "get"]:
    key = sys.argv[-1].split(":", 1)[1]
    if key not in pairs:
        sys.stderr.write("error: configuration key '%s' not found for stack\\n" % sys.argv[-1])
        sys.exit(255)
    print(pairs[key])
    sys.exit(0)
creds = os.environ.get("AWS_SHARED_CREDENTIALS_FILE")
record = {"argv": sys.argv[1:], "env": {k: v for k, v in os.environ.items() if k.startswith("AWS_")},
          "mode": oct(stat.S_IMODE(os.stat(creds).st_mode)), "dir_mode": oct(stat.S_IMODE(os.stat(os.path.dirname(creds)).st_mode)),
          "creds": open(creds).read()}
with open(log, "w") as fh:
    json.dump(record, fh)
sys.exit(int(os.environ.get("FAKE_PULUMI_RC", "0")))
"""
PAIRS = {"airflowS3AccessKey": "AKAIRFLOWSEARCH0001", "airflowS3SecretKey": "airflowSearchSecret000000000000000000000",
         "postgresqlS3AccessKey": "AKPOSTGRESSEARCH001", "postgresqlS3SecretKey": "postgresSearchSecret0000000000000000000"}


def run_import_cli(tmp_path, pairs, rc=0, stack="search"):
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    fake = bindir / "pulumi"
    fake.write_text(FAKE_PULUMI)
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_CONFIG_PASSPHRASE")}
    env.update(PATH=f"{bindir}:{env['PATH']}", FAKE_PULUMI_LOG=str(tmp_path / "log.json"),
               FAKE_PULUMI_PAIRS=json.dumps(pairs), FAKE_PULUMI_RC=str(rc),
               AWS_ACCESS_KEY_ID="AMBIENT-KEY", AWS_SECRET_ACCESS_KEY="ambient-secret", AWS_PROFILE="default")
    return run_cli("-s", stack, "--out", str(tmp_path / "plan.json"), "--import", env=env)


@pytest.mark.processes
def test_import_reads_each_bucket_with_its_users_pair_from_a_private_file(tmp_path):
    proc = run_import_cli(tmp_path, PAIRS)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "log.json").read_text())
    assert record["argv"] == ["import", "-s", "search", "--file", str(tmp_path / "plan.json"), "--yes", "--generate-code=false"]
    assert record["mode"] == "0o600" and record["dir_mode"] == "0o700", record
    assert record["creds"] == (
        "[search-logs-rgw]\naws_access_key_id = AKAIRFLOWSEARCH0001\naws_secret_access_key = airflowSearchSecret000000000000000000000\n"
        "[search-postgresql-backups-rgw]\naws_access_key_id = AKPOSTGRESSEARCH001\naws_secret_access_key = postgresSearchSecret0000000000000000000\n")
    # the ambient credentials would win over a profile: the import never sees them
    assert not set(import_plan.AMBIENT_AWS) & set(record["env"]), record["env"]
    assert not Path(record["env"]["AWS_SHARED_CREDENTIALS_FILE"]).exists(), "the credentials file outlives the import"
    doc = json.loads((tmp_path / "plan.json").read_text())
    profiles = {e["name"]: e["inputs"].get("profile") for e in doc["resources"] if e["type"] == import_plan.AWS_PROVIDER}
    assert profiles == {"search-logs-rgw": "search-logs-rgw", "search-postgresql-backups-rgw": "search-postgresql-backups-rgw"}
    for value in PAIRS.values():
        assert value not in (tmp_path / "plan.json").read_text() and value not in proc.stdout + proc.stderr


@pytest.mark.processes
def test_failed_import_exits_1_and_still_removes_the_credentials(tmp_path):
    proc = run_import_cli(tmp_path, PAIRS, rc=3)
    assert proc.returncode == 1 and "pulumi import exited 3" in proc.stdout, proc.stdout + proc.stderr
    record = json.loads((tmp_path / "log.json").read_text())
    assert not Path(record["env"]["AWS_SHARED_CREDENTIALS_FILE"]).exists()


@pytest.mark.processes
def test_missing_pair_is_one_line_naming_the_key_and_imports_nothing(tmp_path):
    pairs = dict(PAIRS)
    del pairs["postgresqlS3SecretKey"]
    proc = run_import_cli(tmp_path, pairs)
    assert proc.returncode == 2 and not (tmp_path / "log.json").exists()
    assert proc.stderr.strip().count("\n") == 0 and "airflow:postgresqlS3SecretKey" in proc.stderr, proc.stderr
    assert "`./dev config set --secret -s search postgresqlS3SecretKey` (CLI: `pulumi config set --secret -s search postgresqlS3SecretKey`)" in proc.stderr


def test_import_needs_out():
    proc = run_cli("-s", "search", "--import")
    assert proc.returncode == 2 and "--import: give --out FILE" in proc.stderr
