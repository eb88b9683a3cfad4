"""The RGW user step ("Generate the S3 keypairs") as text: the scripts, their quoting, the stdin
contract, and the Command around them.

tests/integration/test_rgw.py runs the same text against a real radosgw-admin.  Here a small
stand-in for radosgw-admin (below) records each call's argv and CEPH_ARGS, so the contract
(keys on stdin, handed on in CEPH_ARGS, never argv) is checked without Ceph.
Set UPDATE_GOLDEN=1 to rewrite the golden scripts after an intended change (then review the diff).
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shlex
import subprocess
import textwrap
from pathlib import Path

import pulumi
import pulumi_command as command
import pytest

from components import remote, rgw_user
from tools import mockrun
from tests.goldens import golden

ACCESS = "AKIAEXAMPLE000000001"  # 20 upper-case/digits, like pulumi-random's access keys
SECRET = "sEcReTexample000000000000000000000000001"  # 40 alphanumerics
HOSTILE_UIDS = ["x y;$(id)", "it's; `id` x", 'q"uote', "new\nline", "star*", "$HOME", "-rf"]




# --- a stand-in radosgw-admin --------------------------------------------------------------

FAKE_RADOSGW_ADMIN = textwrap.dedent('''\
    #!/usr/bin/env python3
    """Enough of radosgw-admin's user/key behaviour (as checked on Ceph 16.2.15) for contract tests."""
    import json, os, sys
    state_dir = os.environ["FAKE_RGW_DIR"]
    with open(os.path.join(state_dir, "calls.jsonl"), "a") as log:
        log.write(json.dumps({"argv": sys.argv[1:], "ceph_args": os.environ.get("CEPH_ARGS", "")}) + "\\n")
    if os.environ.get("FAKE_RGW_EXIT"):
        sys.exit(int(os.environ["FAKE_RGW_EXIT"]))
    users_file = os.path.join(state_dir, "users.json")
    users = json.load(open(users_file)) if os.path.exists(users_file) else {}
    opts = {}
    words = []
    for arg in os.environ.get("CEPH_ARGS", "").split() + sys.argv[1:]:
        if arg.startswith("--") and "=" in arg:
            key, value = arg[2:].split("=", 1)
            opts[key] = value
        else:
            words.append(arg)
    uid, ak, sk = opts.get("uid"), opts.get("access-key"), opts.get("secret-key")
    def dump(u):
        keys = [{"user": u, "access_key": a, "secret_key": s} for a, s in users[u]]
        print(json.dumps({"user_id": u, "display_name": u, "keys": keys, "swift_keys": []}, indent=4))
    def owner(a):
        return next((u for u, pairs in users.items() if any(p[0] == a for p in pairs)), None)
    if words == ["user", "info"]:
        if uid is None:
            if owner(ak) is None:
                print("user.init failed: (13) Permission denied", file=sys.stderr)
                sys.exit(13)
            dump(owner(ak))
        elif uid in users:
            dump(uid)
        else:
            print("could not fetch user info: no user info saved", file=sys.stderr)
            sys.exit(22)
    elif words == ["user", "create"]:
        if uid in users:
            sys.exit(17)
        users[uid] = [[ak, sk]]
        dump(uid)
    elif words == ["key", "create"]:
        pairs = [p for p in users[owner(ak) or uid] if p[0] != ak]
        users[owner(ak) or uid] = pairs + [[ak, sk]]
        dump(uid)
    else:
        sys.exit(f"fake radosgw-admin: unsupported {words}")
    json.dump(users, open(users_file, "w"))
''')


class FakeRgw:
    def __init__(self, root: Path):
        self.root = root
        bin_dir = root / "bin"
        bin_dir.mkdir()
        tool = bin_dir / "radosgw-admin"
        tool.write_text(FAKE_RADOSGW_ADMIN)
        tool.chmod(0o755)
        # if quoting failed, `id` would run: make that visible
        marker = root / "id-ran"
        (bin_dir / "id").write_text(f"#!/bin/sh\ntouch {shlex.quote(str(marker))}\n")
        (bin_dir / "id").chmod(0o755)
        self.marker = marker
        self.env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE_RGW_DIR": str(root), "HOME": str(root)}

    def run(self, script: str, stdin: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", script, "rgw-user"], input=stdin, capture_output=True, text=True,
                              env={**self.env, **env}, timeout=30)

    def calls(self) -> list[dict]:
        path = self.root / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def users(self) -> dict:
        path = self.root / "users.json"
        return json.loads(path.read_text()) if path.exists() else {}


@pytest.fixture
def fake(tmp_path) -> FakeRgw:
    return FakeRgw(tmp_path)


# --- the script as text ------------------------------------------------------------------

def test_user_script_matches_golden():
    golden("rgw_user_airflow-search.sh", rgw_user.rgw_user_script("airflow-search", "airflow-search"))


def test_delete_script_matches_golden():
    golden("rgw_user_delete_airflow-search.sh", rgw_user.rgw_user_delete_script("airflow-search"))


def test_scripts_follow_the_remote_conventions():
    for script in (rgw_user.rgw_user_script("u", "u"), rgw_user.rgw_user_delete_script("u")):
        assert script.startswith(remote.header("RGW user").splitlines()[0]), "scripts start with remote.header()"
        assert "set -euo pipefail" in script and "umask 077" in script, "strict mode and umask from the header"
        subprocess.run(["bash", "-n"], input=script, text=True, check=True)


def test_script_functions_take_no_key():
    """Keys cannot end up in the script text (argv of `bash -c` on the remote host): no parameter for them."""
    assert list(inspect.signature(rgw_user.rgw_user_script).parameters) == ["uid", "display_name"]
    assert list(inspect.signature(rgw_user.rgw_user_delete_script).parameters) == ["uid"]


def test_no_secret_shaped_value_in_the_script_text():
    script = rgw_user.rgw_user_script("airflow-search", "airflow-search")
    # RGW/pulumi-random key shapes: 20 upper-case/digits, 40 alphanumerics
    assert not re.search(r"(?<![A-Za-z0-9])[A-Z0-9]{20}(?![A-Za-z0-9])", script), "no access-key-shaped token"
    assert not re.search(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{40}(?![A-Za-z0-9+/])", script), "no secret-shaped token"


def test_keys_reach_radosgw_admin_only_through_ceph_args():
    script = rgw_user.rgw_user_script("airflow-search", "airflow-search")
    key_lines = [line.strip() for line in script.splitlines() if "--secret-key" in line or "--access-key=$" in line]
    assert key_lines, "the script hands the keys to radosgw-admin"
    for line in key_lines:
        assert line.startswith('CEPH_ARGS="'), f"keys only inside a CEPH_ARGS assignment, not argv: {line}"


@pytest.mark.parametrize("uid", HOSTILE_UIDS)
def test_hostile_uids_are_quoted(uid):
    script = rgw_user.rgw_user_script(uid, uid)
    assert f"uid={shlex.quote(uid)}\n" in script, "the uid is assigned once, shell-quoted"
    assert f"display_name={shlex.quote(uid)}\n" in script, "the display name is assigned once, shell-quoted"
    delete = rgw_user.rgw_user_delete_script(uid)
    # the delete script quotes the uid too: run, it prints the instructions with the uid literal
    done = subprocess.run(["bash", "-c", delete, "rgw-delete"], capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout) == (0, ""), "the delete script quotes the uid too"
    assert done.stderr.splitlines() == "\n".join(rgw_user.kept_instructions(uid)).splitlines(), \
        "the delete script quotes the uid too"
    for text in (script, delete):
        subprocess.run(["bash", "-n"], input=text, text=True, check=True)


@pytest.mark.parametrize("uid", HOSTILE_UIDS)
def test_hostile_uid_reaches_radosgw_admin_as_one_argument(fake, uid):
    proc = fake.run(rgw_user.rgw_user_script(uid, uid), f"{ACCESS}\n{SECRET}\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"user {uid}: created\n", "summary names the uid literally"
    assert not fake.marker.exists(), "`id` inside the uid was executed: quoting failed"
    assert fake.calls()[0]["argv"] == ["user", "info", f"--uid={uid}"], "first call: user info of that uid"
    create = fake.calls()[1]["argv"]
    assert create == ["user", "create", f"--uid={uid}", f"--display-name={uid}"], "one argument each"


# --- the stdin contract -------------------------------------------------------------------

def test_stdin_keys_are_handed_on_in_ceph_args_never_argv(fake):
    proc = fake.run(rgw_user.rgw_user_script("airflow-search", "airflow-search"), f"{ACCESS}\n{SECRET}\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "user airflow-search: created\n", "stdout is the summary line only"
    assert fake.users() == {"airflow-search": [[ACCESS, SECRET]]}, "user created with the supplied pair"
    calls = fake.calls()
    for call in calls:
        assert not any(SECRET in a or ACCESS in a for a in call["argv"]), f"a key on argv: {call['argv']}"
    create = next(c for c in calls if c["argv"][:2] == ["user", "create"])
    assert create["ceph_args"] == f"--access-key={ACCESS} --secret-key={SECRET}", "keys travel in CEPH_ARGS"
    plain = [c for c in calls if c["argv"][:2] == ["user", "info"]]
    assert plain and all(c["ceph_args"] == "" for c in plain), "user info by uid runs without the keys"
    assert SECRET not in proc.stderr and ACCESS not in proc.stderr, "no key in diagnostics"


def test_existing_ceph_args_are_kept(fake):
    proc = fake.run(rgw_user.rgw_user_script("u", "u"), f"{ACCESS}\n{SECRET}\n", CEPH_ARGS="--id=admin")
    assert proc.returncode == 0, proc.stderr
    create = next(c for c in fake.calls() if c["argv"][:2] == ["user", "create"])
    assert create["ceph_args"] == f"--id=admin --access-key={ACCESS} --secret-key={SECRET}", "CEPH_ARGS extended"


def test_a_last_line_without_newline_is_accepted(fake):
    proc = fake.run(rgw_user.rgw_user_script("u", "u"), f"{ACCESS}\n{SECRET}")
    assert proc.returncode == 0, proc.stderr
    assert fake.users() == {"u": [[ACCESS, SECRET]]}, "both keys read"


@pytest.mark.parametrize(
    "stdin, why",
    [
        ("", "no input"),
        (f"{ACCESS}\n", "secret key missing"),
        (f"{ACCESS} \n{SECRET}\n", "trailing space would split CEPH_ARGS"),
        (f"{ACCESS}\n{SECRET} --uid=other\n", "an injected CEPH_ARGS option"),
        (f"short\n{SECRET}\n", "access key too short"),
        (f"{ACCESS}\nsecret\"quote0000000000000\n", "a quote in the secret"),
        (f"{ACCESS}\r\n{SECRET}\r\n", "CRLF line ends"),
    ],
)
def test_malformed_stdin_is_refused_before_any_radosgw_admin_call(fake, stdin, why):
    proc = fake.run(rgw_user.rgw_user_script("u", "u"), stdin)
    assert proc.returncode != 0, f"accepted stdin with {why}"
    assert fake.calls() == [], f"radosgw-admin ran despite {why}"
    assert proc.stdout == "", "nothing on stdout on failure"
    assert SECRET not in proc.stderr, "the refusal does not echo the secret"


def test_unexpected_user_info_failure_aborts(fake):
    proc = fake.run(rgw_user.rgw_user_script("u", "u"), f"{ACCESS}\n{SECRET}\n", FAKE_RGW_EXIT="5")
    assert proc.returncode != 0, "user info failing with anything but 22 aborts"
    assert len(fake.calls()) == 1, "nothing is created after a failed lookup"
    assert "exit 5" in proc.stderr, "the failure is named"
    assert proc.stdout == ""


def test_key_stdin_is_access_then_secret_one_a_line():
    value = _resolve(lambda: rgw_user.key_stdin(pulumi.Output.secret(ACCESS), SECRET))
    assert value == f"{ACCESS}\n{SECRET}\n", "two lines: access key, then secret key"


def _resolve(make_output) -> str:
    found: dict[str, str] = {}

    def program():
        make_output().apply(lambda v: found.setdefault("value", v))

    run = mockrun.run_program("airflow", "search", {}, program=program)
    if run.error is not None:
        raise run.error
    return found["value"]


# --- the delete script --------------------------------------------------------------------

def test_delete_script_deletes_nothing_and_prints_the_manual_command(fake):
    uid = "it's; `id` x"
    proc = fake.run(rgw_user.rgw_user_delete_script(uid), "")
    assert proc.returncode == 0, proc.stderr
    assert fake.calls() == [], "the delete script never runs radosgw-admin"
    assert proc.stdout == "", "nothing on stdout"
    assert "radosgw-admin user rm --uid=" in proc.stderr and "--purge-data" in proc.stderr, "manual command given"
    manual = proc.stderr.split("sudo ", 1)[1].strip()
    assert shlex.split(manual)[:4] == ["radosgw-admin", "user", "rm", f"--uid={uid}"], "the printed command quotes the uid for copy-paste"
    assert not fake.marker.exists(), "`id` inside the uid was executed"


# --- the component under Pulumi's mocks ---------------------------------------------------

def render_user(use_sudo: bool = True, with_precondition: bool = False) -> mockrun.RecordingMonitor:
    def program():
        # a stand-in for the namespace read: a resource the remote step must wait for
        after = [command.local.Command("precondition", create="true")] if with_precondition else []
        rgw_user.RgwUser(
            "search-airflow",
            rgw_user.RgwUserArgs(
                uid="airflow-search",
                display_name="airflow-search",
                access_key=pulumi.Output.secret(ACCESS),
                secret_key=pulumi.Output.secret(SECRET),
                conn=command.remote.ConnectionArgs(host="cephosd1001.eqiad.wmnet", user="deploy",
                                                   private_key=pulumi.Output.secret("KEY"), host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKaQlgHMVkTqY0HnPm1i8y5/TKASgAzqhyhQwFNnQYnU"),
                use_sudo=use_sudo,
                timeout_minutes=7,
                depends_on=after,
            ),
        )

    # plain mocks: the component alone meets no platform (the default live-platform model
    # seeds itself from a full stack config)
    run = mockrun.run_program("airflow", "search", {}, program=program, mocks=mockrun.Mocks())
    if run.error is not None:
        raise run.error
    return run.monitor


def test_component_creates_one_protected_secret_command():
    monitor = render_user()
    component = monitor.one("dpe:airflow:RgwUser")
    cmd = monitor.one("command:remote:Command")
    assert cmd.name == "search-airflow-user", "the Command is named after the component"
    assert cmd.parent == component.urn, "the Command is the component's child"
    assert cmd.protect, "the RGW user Command is protected (data-bearing)"
    assert cmd.delete_before_replace, "create and delete act on the same uid: delete before replace"
    assert {"stdout", "stderr"} <= set(cmd.additional_secret_outputs), "outputs are secret"
    assert cmd.inputs["logging"] == "stderr", "the Command logs stderr only (stdout is the secret channel)"
    # 7 minutes on the remote host (420 s), + 30 s kill-after + 60 s for the engine
    assert cmd.custom_timeouts == {"create": "510s", "update": "510s", "delete": "510s"}, "timeouts"
    assert monitor.outputs[component.urn] == {"uid": "airflow-search"}, "register_outputs names the uid"


def test_component_sends_the_keys_on_secret_stdin():
    cmd = render_user().one("command:remote:Command")
    stdin = cmd.inputs["stdin"]
    assert isinstance(stdin, mockrun.SecretLeaf), "stdin carries the keys: it must be secret"
    assert stdin.value == f"{ACCESS}\n{SECRET}\n", "stdin: access key line, secret key line"
    plain = repr(mockrun.masked(cmd.inputs))
    assert SECRET not in plain and ACCESS not in plain, "no key anywhere else in the Command's inputs"


def test_component_runs_the_scripts_through_sudo_under_the_remote_timeout():
    cmd = render_user().one("command:remote:Command")
    script = rgw_user.rgw_user_script("airflow-search", "airflow-search")
    bounded = "sudo -n timeout --kill-after=30s 420s /bin/bash -c "
    assert cmd.inputs["create"].startswith(f"{bounded}{shlex.quote(script)} search-airflow-user; "), "create"
    assert cmd.inputs["create"] == remote.wrap(script, True, "search-airflow-user", 420), "create"
    delete = rgw_user.rgw_user_delete_script("airflow-search")
    assert cmd.inputs["delete"].startswith(f"{bounded}{shlex.quote(delete)} search-airflow-user; "), "delete"
    assert cmd.inputs["delete"] == remote.wrap(delete, True, "search-airflow-user", 420), "delete"
    assert "triggers" not in cmd.inputs, "no triggers: a protected resource cannot be replaced; stdin changes re-run create"


def test_component_without_sudo_still_runs_the_script_under_bash():
    # the remote login shell may not be bash; the script needs it
    cmd = render_user(use_sudo=False).one("command:remote:Command")
    script = rgw_user.rgw_user_script("airflow-search", "airflow-search")
    assert cmd.inputs["create"].startswith(
        f"timeout --kill-after=30s 420s /bin/bash -c {shlex.quote(script)} search-airflow-user; "), "no sudo, still bash"
    assert cmd.inputs["create"] == remote.wrap(script, False, "search-airflow-user", 420), "create"


def test_component_waits_for_its_preconditions():
    monitor = render_user(with_precondition=True)
    precondition = monitor.one("command:local:Command")
    cmd = monitor.one("command:remote:Command")
    assert precondition.urn in cmd.dependencies, "search-airflow-user must depend on the preconditions (depends_on)"
    assert render_user().one("command:remote:Command").dependencies == [], "no preconditions, no dependencies"


# --- what deleting leaves, as the manual steps say it --------------------------------------

def bash_words(fake: FakeRgw, line: str) -> list[str]:
    """The words bash makes of ``line`` (as an operator pasting it would run them), unexpanded."""
    done = subprocess.run(["bash", "-c", 'eval "words=( $1 )"; printf "%s\\0" "${words[@]}"', "split", line],
                          capture_output=True, text=True, env=fake.env, timeout=30, check=True)
    return done.stdout.split("\0")[:-1]


@pytest.mark.parametrize("uid", ["airflow-search", *HOSTILE_UIDS])
def test_delete_script_prints_the_kept_instructions(fake, uid):
    """The manual steps (rgw_user.kept_instructions) and the delete script say the same thing."""
    proc = fake.run(rgw_user.rgw_user_delete_script(uid), "")
    assert proc.returncode == 0 and proc.stdout == "", proc
    kept = rgw_user.kept_instructions(uid)
    printed = proc.stderr.split("\n  sudo ", 1)
    assert len(printed) == 2 and len(kept) == 2, f"two parts each: {proc.stderr!r} / {kept!r}"
    assert printed[0] == kept[0], f"first line of the delete output for {uid!r}"
    # bash's %q and shlex.quote quote differently ($'..' for a newline): bash reads both as one command
    assert bash_words(fake, "sudo " + printed[1]) == bash_words(fake, kept[1]), f"manual command for {uid!r}"
    assert bash_words(fake, kept[1])[:5] == ["sudo", "radosgw-admin", "user", "rm", f"--uid={uid}"], kept[1]
    assert not fake.marker.exists(), "`id` inside the uid was executed"
    if uid == "airflow-search":
        assert proc.stderr == "\n".join(kept) + "\n", "a plain uid prints the very same lines"
