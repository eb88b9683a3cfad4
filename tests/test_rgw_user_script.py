"""The RGW user step ("Generate the S3 keypairs") as text: the scripts, their quoting, the stdin
contract, the sudo calls and the sudoers rules that allow exactly them, and the Command around them.

tests/integration/test_rgw.py runs the same text against a real radosgw-admin, and
tests/integration/test_rgw_over_ssh.py over real SSH as a non-root account holding exactly the
rules.  Here a small stand-in for radosgw-admin (below) records each call's argv and CEPH_ARGS,
and a stand-in ``sudo`` records each privileged command line, so the contract (keys on stdin,
handed on in CEPH_ARGS built by components/scripts/rgw_admin.py, never argv; every sudo call one
of the rules) is checked without Ceph or sudo.
Set UPDATE_GOLDEN=1 to rewrite the golden scripts after an intended change (then review the diff).
"""

from __future__ import annotations

import base64
import inspect
import json
import re
import shlex
import shutil
import subprocess
import textwrap
from pathlib import Path

import pulumi
import pulumi_command as command
import pytest

from components import remote, rgw_user, sudoers
from tools import mockrun
from tests.goldens import golden

ACCESS = "AKIAEXAMPLE000000001"  # 20 upper-case/digits, like pulumi-random's access keys
SECRET = "sEcReTexample000000000000000000000000001"  # 40 alphanumerics
HOSTILE_UIDS = ["x y;$(id)", "it's; `id` x", 'q"uote', "new\nline", "star*", "$HOME", "-rf"]
PYTHON3 = "/usr/bin/python3"  # what rgw_admin.py runs under here (the production default path)


# --- stand-ins for radosgw-admin and sudo --------------------------------------------------

# Run by rgw_admin.py with an environment of its own (PATH, LANG, CEPH_ARGS): the state lives
# next to the stand-in, found from its own path.
FAKE_RADOSGW_ADMIN = textwrap.dedent('''\
    #!/usr/bin/env python3
    """Enough of radosgw-admin's user/key behaviour (as checked on Ceph 16.2.15) for contract tests."""
    import json, os, sys
    state_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(state_dir, "calls.jsonl"), "a") as log:
        log.write(json.dumps({"argv": sys.argv[1:], "ceph_args": os.environ.get("CEPH_ARGS", ""),
                              "env": sorted(os.environ)}) + "\\n")
    if os.path.exists(os.path.join(state_dir, "exit")):
        sys.exit(int(open(os.path.join(state_dir, "exit")).read()))
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
        if owner(ak) not in (None, uid):
            print("could not create user: unable to create user, duplicate key provided", file=sys.stderr)
            sys.exit(241)
        if uid in users:
            sys.exit(17)
        users[uid] = [[ak, sk]]
        dump(uid)
    elif words == ["key", "create"]:
        if uid in users and owner(ak) not in (None, uid):
            print("could not create key: unable to add access key, existing S3 key in RGW system:" + ak, file=sys.stderr)
            sys.exit(241)
        # an unknown uid: radosgw-admin finds the user by the access key and rewrites its secret
        target = uid if uid in users else owner(ak)
        pairs = [p for p in users[target] if p[0] != ak]
        users[target] = pairs + [[ak, sk]]
        dump(target)
    else:
        sys.exit(f"fake radosgw-admin: unsupported {words}")
    json.dump(users, open(users_file, "w"))
''')

# records the privileged command line, then runs it (as sudo would, without changing user)
FAKE_SUDO = textwrap.dedent('''\
    #!/usr/bin/env python3
    import json, os, sys
    with open({log!r}, "a") as log:
        log.write(json.dumps(sys.argv[1:]) + "\\n")
    assert sys.argv[1] == "-n", sys.argv
    os.execv(sys.argv[2], sys.argv[2:])
''')


class FakeRgw:
    def __init__(self, root: Path):
        self.root = root
        bin_dir = root / "bin"
        bin_dir.mkdir()
        self.tool = bin_dir / "radosgw-admin"
        self.tool.write_text(FAKE_RADOSGW_ADMIN)
        self.tool.chmod(0o755)
        (bin_dir / "sudo").write_text(FAKE_SUDO.format(log=str(root / "sudo.jsonl")))
        (bin_dir / "sudo").chmod(0o755)
        # if quoting failed, `id` would run: make that visible
        marker = root / "id-ran"
        (bin_dir / "id").write_text(f"#!/bin/sh\ntouch {shlex.quote(str(marker))}\n")
        (bin_dir / "id").chmod(0o755)
        self.marker = marker
        self.tools = rgw_user.RgwTools(radosgw_admin=str(self.tool), python3=PYTHON3)
        self.env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(root)}

    def script(self, uid: str = "u", display_name: str | None = None, use_sudo: bool = True) -> str:
        return rgw_user.rgw_user_script(uid, uid if display_name is None else display_name,
                                        use_sudo=use_sudo, tools=self.tools)

    def run(self, script: str, stdin: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", script, "rgw-user"], input=stdin, capture_output=True, text=True,
                              env={**self.env, **env}, timeout=30)

    def helper(self, *words: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess:
        """rgw_admin.py run directly, as a caller of the sudo rule could (the script skipped)."""
        argv = rgw_user.rgw_admin_argv(self.tools, *words)
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, env={**self.env, **env}, timeout=30)

    def fail_with(self, rc: int) -> None:
        (self.root / "exit").write_text(str(rc))

    def calls(self) -> list[dict]:
        path = self.root / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def sudo_calls(self) -> list[list[str]]:
        path = self.root / "sudo.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def users(self) -> dict:
        path = self.root / "users.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def seed(self, users: dict) -> None:
        (self.root / "users.json").write_text(json.dumps(users))


@pytest.fixture
def fake(tmp_path) -> FakeRgw:
    return FakeRgw(tmp_path)


# --- the script as text ------------------------------------------------------------------

def test_user_script_matches_golden():
    golden("rgw_user_airflow-search.sh", rgw_user.rgw_user_script("airflow-search", "airflow-search", use_sudo=True))


def test_delete_script_matches_golden():
    golden("rgw_user_delete_airflow-search.sh", rgw_user.rgw_user_delete_script("airflow-search", use_sudo=True))


@pytest.mark.processes
def test_scripts_are_the_header_the_values_and_the_body_files():
    for name, text in (("rgw_user.sh", rgw_user.rgw_user_script("u", "u", use_sudo=True)),
                       ("rgw_user_delete.sh", rgw_user.rgw_user_delete_script("u", use_sudo=True))):
        body_file = remote.script_file(name)
        first = body_file.splitlines()[:3]
        assert first[0] == "#!/bin/bash" and first[1] == "# shellcheck shell=bash", \
            f"components/scripts/{name} starts with the shebang and the shellcheck directive"
        assert first[2].startswith("# "), f"components/scripts/{name}: a comment says what it is and what is filled in"
        assert text.startswith(remote.header("RGW user").splitlines()[0]), f"{name}: starts with remote.header()"
        assert "set -euo pipefail" in text and "umask 077" in text, f"{name}: strict mode and umask from the header"
        assert text.endswith(body_file.split("\n", 2)[2]), f"{name}: the body file comes verbatim at the end"
        # the array only where the body calls a privileged tool (the notice runs nothing privileged)
        assert ("\nsudo=(sudo -n)\n" in text) == (name == "rgw_user.sh"), f"{name}: the sudo array (only if used)"
        subprocess.run(["bash", "-n"], input=text, text=True, check=True)


@pytest.mark.processes
@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck missing (tools/system-packages.sh)")
@pytest.mark.parametrize("use_sudo", [True, False])
def test_shellcheck_finds_nothing_in_the_scripts(use_sudo):
    for text in (rgw_user.rgw_user_script("airflow-search", "airflow-search", use_sudo=use_sudo),
                 rgw_user.rgw_user_delete_script("airflow-search", use_sudo=use_sudo)):
        proc = subprocess.run(["shellcheck", "-s", "bash", "-"], input=text, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"shellcheck findings:\n{proc.stdout}"


def test_script_functions_take_no_key():
    """Keys cannot end up in the script text (argv of `bash -c` on the remote host): no parameter for them."""
    assert list(inspect.signature(rgw_user.rgw_user_script).parameters) == ["uid", "display_name", "use_sudo", "tools"]
    assert list(inspect.signature(rgw_user.rgw_user_delete_script).parameters) == ["uid", "use_sudo"]


def test_no_secret_shaped_value_in_the_script_text():
    script = rgw_user.rgw_user_script("airflow-search", "airflow-search", use_sudo=True)
    # the base64 of rgw_admin.py is one long run of letters: judged by its decoded text instead
    program = shlex.quote(rgw_user.rgw_admin_program())
    assert program in script, "the helper program is filled in as one quoted value"
    for text in (script.replace(program, ""), rgw_user.rgw_admin_code()):
        # RGW/pulumi-random key shapes: 20 upper-case/digits, 40 alphanumerics
        assert not re.search(r"(?<![A-Za-z0-9])[A-Z0-9]{20}(?![A-Za-z0-9])", text), "no access-key-shaped token"
        assert not re.search(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{40}(?![A-Za-z0-9+/])", text), "no secret-shaped token"


def test_the_helper_program_is_one_word_that_runs_exactly_rgw_admin_py():
    program = rgw_user.rgw_admin_program()
    assert not re.search(r"[\s\\]", program), "no white space or backslash: a sudoers rule must hold it as one word"
    encoded = re.fullmatch(r'exec\(__import__\("base64"\)\.b64decode\("([A-Za-z0-9+/=]+)"\)\)', program)
    assert encoded, f"the program is exec(base64): {program[:80]}"
    code = base64.b64decode(encoded.group(1)).decode()
    assert code == rgw_user.rgw_admin_code(), "it decodes to rgw_admin.py"
    assert remote.script_file("rgw_admin.py").endswith(code), "rgw_admin.py without its docstring, nothing else"
    compile(code, "rgw_admin.py", "exec")


@pytest.mark.processes
@pytest.mark.parametrize("uid", HOSTILE_UIDS)
def test_hostile_uids_are_quoted(uid):
    script = rgw_user.rgw_user_script(uid, uid, use_sudo=True)
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


@pytest.mark.processes
@pytest.mark.parametrize("uid", HOSTILE_UIDS)
def test_hostile_uid_reaches_radosgw_admin_as_one_argument(fake, uid):
    proc = fake.run(fake.script(uid, use_sudo=False), f"{ACCESS}\n{SECRET}\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"user {uid}: created\n", "summary names the uid literally"
    assert not fake.marker.exists(), "`id` inside the uid was executed: quoting failed"
    assert fake.calls()[0]["argv"] == ["user", "info", f"--uid={uid}"], "first call: user info of that uid"
    create = fake.calls()[1]["argv"]
    assert create == ["user", "create", f"--uid={uid}", f"--display-name={uid}"], "one argument each"


# --- the stdin contract -------------------------------------------------------------------

@pytest.mark.processes
def test_stdin_keys_are_handed_on_in_ceph_args_never_argv(fake):
    proc = fake.run(fake.script("airflow-search"), f"{ACCESS}\n{SECRET}\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "user airflow-search: created\n", "stdout is the summary line only"
    assert fake.users() == {"airflow-search": [[ACCESS, SECRET]]}, "user created with the supplied pair"
    calls = fake.calls()
    for call in calls:
        assert not any(SECRET in a or ACCESS in a for a in call["argv"]), f"a key on radosgw-admin's argv: {call['argv']}"
    for argv in fake.sudo_calls():
        assert not any(SECRET in a or ACCESS in a for a in argv), f"a key on sudo's argv: {argv[:3]}"
    create = next(c for c in calls if c["argv"][:2] == ["user", "create"])
    assert create["ceph_args"] == f"--access-key={ACCESS} --secret-key={SECRET}", "keys travel in CEPH_ARGS"
    plain = [c for c in calls if c["argv"][:2] == ["user", "info"]]
    assert plain and all(c["ceph_args"] == "" for c in plain), "user info by uid runs without the keys"
    assert SECRET not in proc.stderr and ACCESS not in proc.stderr, "no key in diagnostics"


@pytest.mark.processes
def test_radosgw_admin_gets_an_environment_of_the_helpers_own_not_the_callers(fake):
    """A caller's CEPH_ARGS (which adds any radosgw-admin option) or other variables never reach it."""
    proc = fake.run(fake.script("u", use_sudo=False), f"{ACCESS}\n{SECRET}\n",
                    CEPH_ARGS="--uid=other --caps=users=*", LD_PRELOAD="", EXTRA="x")
    assert proc.returncode == 0, proc.stderr
    calls = fake.calls()
    create = next(c for c in calls if c["argv"][:2] == ["user", "create"])
    assert create["ceph_args"] == f"--access-key={ACCESS} --secret-key={SECRET}", "CEPH_ARGS is built from the keys alone"
    for call in calls:
        assert set(call["env"]) <= {"PATH", "LANG", "CEPH_ARGS", "CEPH_CONF", "PWD"}, f"unexpected variables: {call['env']}"
    assert fake.users() == {"u": [[ACCESS, SECRET]]}, "the caller's --uid=other had no effect"


@pytest.mark.processes
def test_a_last_line_without_newline_is_accepted(fake):
    proc = fake.run(fake.script("u"), f"{ACCESS}\n{SECRET}")
    assert proc.returncode == 0, proc.stderr
    assert fake.users() == {"u": [[ACCESS, SECRET]]}, "both keys read"


MALFORMED = [
    ("", "no input"),
    (f"{ACCESS}\n", "secret key missing"),
    (f"{ACCESS} \n{SECRET}\n", "trailing space would split CEPH_ARGS"),
    (f"{ACCESS}\n{SECRET} --uid=other\n", "an injected CEPH_ARGS option"),
    (f"short\n{SECRET}\n", "access key too short"),
    (f"{ACCESS}\nsecret\"quote0000000000000\n", "a quote in the secret"),
    (f"{ACCESS}\r\n{SECRET}\r\n", "CRLF line ends"),
]


@pytest.mark.processes
@pytest.mark.parametrize("stdin, why", MALFORMED, ids=[w for _, w in MALFORMED])
def test_malformed_stdin_is_refused_before_any_radosgw_admin_call(fake, stdin, why):
    proc = fake.run(fake.script("u"), stdin)
    assert proc.returncode != 0, f"accepted stdin with {why}"
    assert fake.calls() == [], f"radosgw-admin ran despite {why}"
    assert proc.stdout == "", "nothing on stdout on failure"
    assert SECRET not in proc.stderr, "the refusal does not echo the secret"


# the script reads two lines (the Command's stdin is exactly those); rgw_admin.py reads all of it
HELPER_MALFORMED = MALFORMED[1:] + [(f"{ACCESS}\n{SECRET}\n--caps=users=*\n", "a third line")]


@pytest.mark.processes
@pytest.mark.parametrize("stdin, why", HELPER_MALFORMED, ids=[w for _, w in HELPER_MALFORMED])
def test_the_root_helper_itself_refuses_malformed_keys(fake, stdin, why):
    """A caller of the sudo rule skips the script: rgw_admin.py checks the keys again."""
    for form in (("user", "create", "--uid=u", "--display-name=u"), ("key", "create", "--uid=u", "--key-type=s3")):
        fake.seed({"u": [["OTHERACCESSKEY000001", SECRET]]})
        proc = fake.helper(*form, stdin=stdin)
        assert proc.returncode == 2 and "rgw-admin: stdin" in proc.stderr, f"{form[:2]}: accepted stdin with {why}"
        assert fake.calls() == [], f"{form[:2]}: radosgw-admin ran despite {why}"
        assert SECRET not in proc.stderr


@pytest.mark.parametrize("words", [
    ("user", "rm", "--uid=u"),
    ("user", "info"),
    ("user", "info", "--uid=u", "--uid=v"),
    ("metadata", "put", "user:u"),
    ("key", "rm", "--uid=u"),
], ids=["user-rm", "no-uid", "two-uids", "metadata-put", "key-rm"])
@pytest.mark.processes
def test_the_root_helper_runs_only_its_three_forms(fake, words):
    proc = fake.helper(*words, stdin=f"{ACCESS}\n{SECRET}\n")
    assert proc.returncode == 2 and "usage" in proc.stderr, f"rgw_admin.py ran {words}: {proc}"
    assert fake.calls() == [], f"radosgw-admin ran for {words}"


@pytest.mark.processes
def test_the_root_helper_refuses_key_create_for_a_user_that_does_not_exist(fake):
    """radosgw-admin would find the user by the access key and rewrite ITS secret (Ceph 16.2.15)."""
    victim = {"victim": [[ACCESS, "victimsecret000000000000000000000000001"]]}
    fake.seed(victim)
    proc = fake.helper("key", "create", "--uid=airflow-search", "--key-type=s3", stdin=f"{ACCESS}\n{SECRET}\n")
    assert proc.returncode == 2 and "does not exist: refusing key create" in proc.stderr, proc
    assert [c["argv"] for c in fake.calls()] == [["user", "info", "--uid=airflow-search"]], "only the existence check ran"
    assert fake.users() == victim, "the access key's owner is untouched"


@pytest.mark.processes
def test_radosgw_admin_messages_pass_through_with_the_keys_masked(fake):
    fake.seed({"u": [["OTHERACCESSKEY000001", "othersecret0000000000000000000000000001"]],
               "owner": [[ACCESS, "ownersecret0000000000000000000000000001"]]})
    proc = fake.helper("key", "create", "--uid=u", "--key-type=s3", stdin=f"{ACCESS}\n{SECRET}\n")
    assert proc.returncode == 241, proc
    assert "existing S3 key in RGW system:<access key>" in proc.stderr, f"the message, key masked: {proc.stderr!r}"
    assert ACCESS not in proc.stderr and SECRET not in proc.stderr


@pytest.mark.processes
def test_unexpected_user_info_failure_aborts(fake):
    fake.fail_with(5)
    proc = fake.run(fake.script("u"), f"{ACCESS}\n{SECRET}\n")
    assert proc.returncode != 0, "user info failing with anything but 22 aborts"
    assert len(fake.calls()) == 1, "nothing is created after a failed lookup"
    assert "exit 5" in proc.stderr, "the failure is named"
    assert proc.stdout == ""


@pytest.mark.processes
def test_another_users_access_key_is_refused_without_printing_it(fake):
    fake.seed({"owner": [[ACCESS, "ownersecret0000000000000000000000000001"]], "u": []})
    proc = fake.run(fake.script("u"), f"{ACCESS}\n{SECRET}\n")
    assert proc.returncode != 0 and "already in use by another RGW user" in proc.stderr, proc.stderr
    assert ACCESS not in proc.stderr and SECRET not in proc.stderr, "no key in the refusal"
    assert fake.users()["owner"] == [[ACCESS, "ownersecret0000000000000000000000000001"]], "the owner's key is untouched"
    newcomer = fake.run(fake.script("newcomer"), f"{ACCESS}\n{SECRET}\n")
    assert newcomer.returncode != 0 and "already in use by another RGW user" in newcomer.stderr, newcomer.stderr
    assert "newcomer" not in fake.users(), "no half-made user"


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


# --- sudo: every call is one rule -----------------------------------------------------------

OTHER_PAIR = ["HANDMADEACCESSKEY001", "handmadesecret000000000000000000000001"]
SCENARIOS = {
    # name: (users before, stdin secret, expected summary)
    "created": ({}, SECRET, "created"),
    "unchanged": ({"airflow-search": [[ACCESS, SECRET]]}, SECRET, "unchanged"),
    "key added": ({"airflow-search": [OTHER_PAIR]}, SECRET, "key added"),
    "secret updated": ({"airflow-search": [[ACCESS, SECRET]]}, "rotated0000000000000000000000000000000001", "secret updated"),
}


def search_rules(tools: rgw_user.RgwTools = rgw_user.RgwTools()) -> sudoers.HostRules:
    return rgw_user.sudoers_rules("search", "pulumi-airflow", [("airflow-search", "airflow-search"),
                                                               ("postgresql-airflow-search", "postgresql-airflow-search")],
                                  600, tools)


@pytest.mark.processes
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_sudo_call_of_the_script_is_exactly_one_rule(fake, scenario):
    before, secret, summary = SCENARIOS[scenario]
    fake.seed(before)
    proc = fake.run(fake.script("airflow-search"), f"{ACCESS}\n{secret}\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"user airflow-search: {summary}\n", "the scenario ran as intended"
    rules = search_rules(fake.tools)
    calls = fake.sudo_calls()
    assert len(calls) == len(fake.calls()) - (1 if summary in ("key added", "secret updated") else 0), \
        "every radosgw-admin call went through sudo (rgw_admin.py's own existence check runs inside one)"
    assert calls, "the script used sudo"
    for argv in calls:
        assert argv[0] == "-n", f"sudo is asked non-interactively: {argv[:2]}"
        matching = [c for c in rules.commands if list(c) == argv[1:]]
        assert len(matching) == 1, f"sudo call not exactly one rule ({len(matching)}): {argv[1:4] + argv[5:]}"


@pytest.mark.processes
def test_the_scenarios_use_every_rule_of_the_user_and_nothing_else(fake):
    used: set[tuple[str, ...]] = set()
    for before, secret, _ in SCENARIOS.values():
        fake.seed(before)
        (fake.root / "sudo.jsonl").unlink(missing_ok=True)
        assert fake.run(fake.script("airflow-search"), f"{ACCESS}\n{secret}\n").returncode == 0
        used |= {tuple(argv[1:]) for argv in fake.sudo_calls()}
    expected = set(rgw_user.privileged_commands("airflow-search", "airflow-search", fake.tools))
    assert used == expected, "the rules for a user are exactly the calls the script makes for it"


@pytest.mark.processes
def test_without_sudo_the_script_runs_the_same_command_lines_directly(fake):
    proc = fake.run(fake.script("airflow-search", use_sudo=False), f"{ACCESS}\n{SECRET}\n")
    assert proc.returncode == 0, proc.stderr
    assert fake.sudo_calls() == [], "remoteSudo false (the SSH user is root): no sudo"
    assert "\nsudo=()\n" in fake.script("airflow-search", use_sudo=False), "an empty sudo array"


# --- the sudoers rules --------------------------------------------------------------------

def test_rules_render_for_the_search_stack():
    rules = search_rules()
    text = sudoers.render(rules)
    assert rules.alias == "AIRFLOW_SEARCH_RGW" and rules.file_name == "airflow-search-rgw", "one file per instance"
    assert text.rstrip().endswith("pulumi-airflow ALL = (root) NOPASSWD: AIRFLOW_SEARCH_RGW"), text[-200:]
    assert "Defaults!AIRFLOW_SEARCH_RGW command_timeout=600\n" in text, "sudo's command_timeout is the step's"
    assert not [line for line in text.splitlines() if "env_keep" in line and not line.startswith("#")], \
        "no variable passes through sudo (a caller's CEPH_ARGS would add any radosgw-admin option)"
    assert rules.commands == (rgw_user.privileged_commands("airflow-search", "airflow-search")
                              + rgw_user.privileged_commands("postgresql-airflow-search", "postgresql-airflow-search")), \
        "both RGW users of the instance, three command lines each"
    for argv in rules.commands:
        assert argv[:3] == ("/usr/bin/python3", "-I", "-c") and argv[4] == "/usr/bin/radosgw-admin", argv[:3]
        assert argv[3] == rgw_user.rgw_admin_program(), "the helper's code is pinned in every rule"
        assert sudoers.command_line(argv) in text, "each command line is in the rendered text"


def test_rules_hold_no_wildcard_and_no_shell():
    text = sudoers.render(search_rules())
    for argv in search_rules().commands:
        line = sudoers.command_line(argv)
        assert not re.search(r"(?<!\\)[*?\[\]]", line), f"an unescaped wildcard: {line[-80:]}"
        assert Path(argv[0]).name not in ("bash", "sh", "dash", "env", "su", "sudo"), argv[0]
    assert "ALL = (root) NOPASSWD: AIRFLOW_SEARCH_RGW" in text and "NOPASSWD: ALL" not in text


def test_the_rules_comments_show_the_code_the_rules_run():
    lines = sudoers.render(search_rules()).splitlines()
    start = next(i for i, line in enumerate(lines) if line.endswith("The code CODE decodes to:")) + 1
    end = next(i for i, line in enumerate(lines) if line.startswith("Cmnd_Alias "))
    shown = [line[len("# "):] for line in lines[start:end]]
    assert all(line.startswith("    ") or line == "" for line in shown), "the code is indented in comments"
    assert "\n".join(line[4:] for line in shown) + "\n" == rgw_user.rgw_admin_code(), \
        "the comments show exactly the code CODE decodes to"


@pytest.mark.parametrize("uid", ["x y", "it's; `id` x", "new\nline", "tab\there", "", "back\\slash"])
def test_uids_a_rule_cannot_pin_are_refused(uid):
    with pytest.raises(sudoers.SudoersError):
        rgw_user.sudoers_rules("search", "pulumi-airflow", [(uid, "airflow-search")], 600)
    with pytest.raises(sudoers.SudoersError):
        rgw_user.sudoers_rules("search", "pulumi-airflow", [("airflow-search", uid)], 600)


@pytest.mark.parametrize("uid", ['q"uote', "star*", "$HOME", "-rf", "tenant$user", "a,b:c=d!e#f"])
def test_odd_but_one_word_uids_are_escaped_in_the_rules(uid):
    rules = rgw_user.sudoers_rules("search", "pulumi-airflow", [(uid, uid)], 600)
    text = sudoers.render(rules)
    assert f" user info --uid\\={sudoers.escape(uid)}," in text, f"the uid {uid!r} escaped: {text[-400:]}"


def test_instance_users_are_the_two_users_instance_py_makes():
    class Cfg:
        airflow_s3_user = "airflow-search"
        pg_s3_user = "postgresql-airflow-search"
    assert rgw_user.instance_users(Cfg()) == (("airflow-search", "airflow-search"),
                                              ("postgresql-airflow-search", "postgresql-airflow-search"))


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


@pytest.mark.parametrize("use_sudo", [True, False], ids=["remoteSudo", "root-ssh-user"])
def test_component_runs_the_script_as_the_ssh_user_under_the_remote_timeout(use_sudo):
    cmd = render_user(use_sudo=use_sudo).one("command:remote:Command")
    script = rgw_user.rgw_user_script("airflow-search", "airflow-search", use_sudo=use_sudo)
    bounded = "timeout --kill-after=30s 420s /bin/bash -c "
    assert f" {bounded}{shlex.quote(script)} search-airflow-user " in cmd.inputs["create"], \
        "create: the script runs under the remote timeout, as the SSH user"
    assert cmd.inputs["create"].split(bounded)[0].count("sudo") == 0, "create: the script itself never runs under sudo"
    assert cmd.inputs["create"] == remote.wrap(script, "search-airflow-user", 420), "create"
    delete = rgw_user.rgw_user_delete_script("airflow-search", use_sudo=use_sudo)
    assert cmd.inputs["delete"] == remote.wrap(delete, "search-airflow-user", 420), "delete"
    assert ("sudo=(sudo -n)" in script) == use_sudo, "remoteSudo decides whether radosgw-admin goes through sudo"
    assert "sudo -n timeout" not in cmd.inputs["create"] + cmd.inputs["delete"], "no sudo for a shell"
    assert "triggers" not in cmd.inputs, "no triggers: a protected resource cannot be replaced; stdin changes re-run create"


def test_component_waits_for_its_preconditions():
    monitor = render_user(with_precondition=True)
    precondition = monitor.one("command:local:Command")
    cmd = monitor.one("command:remote:Command")
    assert precondition.urn in cmd.dependencies, "search-airflow-user must depend on the preconditions (depends_on)"
    assert render_user().one("command:remote:Command").dependencies == [], "no preconditions, no dependencies"


# --- what deleting leaves, as the manual steps say it --------------------------------------

@pytest.mark.processes
def test_delete_script_deletes_nothing_and_prints_the_manual_command(fake):
    uid = "it's; `id` x"
    proc = fake.run(rgw_user.rgw_user_delete_script(uid, use_sudo=True), "")
    assert proc.returncode == 0, proc.stderr
    assert fake.calls() == [] and fake.sudo_calls() == [], "the delete script runs nothing privileged"
    assert proc.stdout == "", "nothing on stdout"
    assert "radosgw-admin user rm --uid=" in proc.stderr and "--purge-data" in proc.stderr, "manual command given"
    manual = proc.stderr.split("sudo ", 1)[1].strip()
    assert shlex.split(manual)[:4] == ["radosgw-admin", "user", "rm", f"--uid={uid}"], "the printed command quotes the uid for copy-paste"
    assert not fake.marker.exists(), "`id` inside the uid was executed"


def bash_words(fake: FakeRgw, line: str) -> list[str]:
    """The words bash makes of ``line`` (as an operator pasting it would run them), unexpanded."""
    done = subprocess.run(["bash", "-c", 'eval "words=( $1 )"; printf "%s\\0" "${words[@]}"', "split", line],
                          capture_output=True, text=True, env=fake.env, timeout=30, check=True)
    return done.stdout.split("\0")[:-1]


@pytest.mark.processes
@pytest.mark.parametrize("uid", ["airflow-search", *HOSTILE_UIDS])
def test_delete_script_prints_the_kept_instructions(fake, uid):
    """The manual steps (rgw_user.kept_instructions) and the delete script say the same thing."""
    proc = fake.run(rgw_user.rgw_user_delete_script(uid), "")
    assert proc.returncode == 0 and proc.stdout == "", proc
    kept = rgw_user.kept_instructions(uid)
    assert proc.stderr == "\n".join(kept) + "\n", f"the delete output is the kept instructions, line for line ({uid!r})"
    assert bash_words(fake, kept[1])[:5] == ["sudo", "radosgw-admin", "user", "rm", f"--uid={uid}"], kept[1]
    assert not fake.marker.exists(), "`id` inside the uid was executed"
