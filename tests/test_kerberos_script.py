"""The Kerberos keytab step as text: the scripts, their sudo calls and sudoers rules, and the Command.

The scripts are components/scripts/kdc_keytab.sh and kdc_delete.sh filled in by remote.script;
here they run against a stand-in KDC (a fake kadmin.local and klist), through a ``sudo`` stub that
records every privileged call.  tests/integration/test_kerberos_kdc.py runs the same text against
a real MIT KDC, tests/integration/test_kdc_over_ssh.py over real SSH with real sudo and exactly
the rules rendered here.
Set UPDATE_GOLDEN=1 to rewrite the golden scripts after an intended change (then review the diff).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pulumi
import pytest
import pulumi_command as command
from pulumi.runtime import mocks as pm

from components import config, kerberos, remote, sudoers
from tests.conftest import STACKS, rendered, stack_config
from tests.goldens import golden
from tools import mockrun, stackconfig

REALM = "WIKIMEDIA"
FQDN = "airflow-search.discovery.wmnet"
SEARCH = kerberos.principals("analytics-search", FQDN, REALM)
TIMEOUT = 600  # commandTimeoutMinutes 10
SPOOL = "/var/lib/airflow-keytabs/airflow-search.discovery.wmnet"
# quoted by the script, and listed exactly (escaped) by the sudoers rules
HOSTILE_RUNS_AS = ["a;$(id)", "x`id`", "it's", 'q"uote', "semi;colon", "star*", "$HOME", "c,o:m=m!a#[x]?"]
# white space, backslashes and control characters cannot be listed exactly in a sudoers rule
UNLISTABLE_RUNS_AS = ["a b;$(id)", "new\nline", "tab\tx", "back\\slash", "bell\x07"]
SHELLCHECK = shutil.which("shellcheck")


def inner_script(line: str) -> str:
    """The script a remote.wrap() line hands to ``/bin/bash -c``."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    at = [i for i, tok in enumerate(tokens[:-2]) if tok == "/bin/bash" and tokens[i + 1] == "-c"]
    assert len(at) == 1, f"one /bin/bash -c in the command line {line[:120]!r}"
    return tokens[at[0] + 2]


def keytab(principals=SEARCH, use_sudo=True, timeout=TIMEOUT, tools=kerberos.KdcTools(), realm=REALM) -> str:
    return kerberos.keytab_script(realm, principals, use_sudo=use_sudo, timeout_seconds=timeout, tools=tools)


def delete(principals=SEARCH, use_sudo=True, timeout=TIMEOUT, tools=kerberos.KdcTools(), realm=REALM) -> str:
    return kerberos.delete_script(realm, principals, use_sudo=use_sudo, timeout_seconds=timeout, tools=tools)


def rules(principals=SEARCH, timeout=TIMEOUT, tools=kerberos.KdcTools(), user="pulumi-airflow") -> sudoers.HostRules:
    return kerberos.sudoers_rules("search", user, REALM, principals, timeout, tools, kdc_host="krb1001.eqiad.wmnet")


# --- principals ---------------------------------------------------------------------------

def test_principals_are_runs_as_airflow_and_http_on_the_service_fqdn():
    assert SEARCH == [
        "analytics-search/airflow-search.discovery.wmnet@WIKIMEDIA",
        "airflow/airflow-search.discovery.wmnet@WIKIMEDIA",
        "HTTP/airflow-search.discovery.wmnet@WIKIMEDIA",
    ]


# --- the script files and what the program fills in ------------------------------------------

def test_keytab_script_matches_golden():
    golden("kerberos_keytab_search.sh", keytab())


def test_delete_script_matches_golden():
    golden("kerberos_delete_search.sh", delete())


@pytest.mark.parametrize("name", ["kdc_keytab.sh", "kdc_delete.sh"])
def test_script_files_start_with_the_shebang_the_shellcheck_line_and_what_is_filled_in(name):
    lines = remote.script_file(name).splitlines()
    assert lines[:2] == ["#!/bin/bash", "# shellcheck shell=bash"], f"{name}: shebang, then '# shellcheck shell=bash'"
    head = "\n".join(line for line in lines[2:12] if line.startswith("#"))
    assert "Filled in by the program:" in head, f"{name}: the comment after them says what the program fills in"


def test_the_generated_scripts_are_the_header_the_values_and_the_files():
    script = keytab()
    assert script.startswith("#!/bin/bash\n"), "the script must be bash"
    assert "\nset -euo pipefail\n" in script and "\numask 077\n" in script, "header: strict mode and umask 077"
    assert script.endswith(remote.script_file("kdc_keytab.sh").split("# shellcheck shell=bash\n", 1)[1]), \
        "the body is components/scripts/kdc_keytab.sh verbatim"
    assert "normalize_py=" + shlex.quote(remote.script_file("kdc_keytab_normalize.py")) + "\n" in script, \
        "the normalizer ships as the file components/scripts/kdc_keytab_normalize.py, quoted"
    assert "\nsudo=(sudo -n)\n" in script and "\nsudo=()\n" in keytab(use_sudo=False), "the sudo array follows use_sudo"


@pytest.mark.processes
@pytest.mark.parametrize("use_sudo", [True, False], ids=["sudo", "root"])
def test_generated_scripts_are_valid_bash_and_shellcheck_clean(use_sudo):
    assert SHELLCHECK, "shellcheck is not installed: tools/system-packages.sh installs it"
    for name, script in (("keytab", keytab(use_sudo=use_sudo)), ("delete", delete(use_sudo=use_sudo))):
        done = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"bash -n rejects the {name} script: {done.stderr}"
        done = subprocess.run([SHELLCHECK, "-s", "bash", "-"], input=script, capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"shellcheck finds something in the {name} script:\n{done.stdout}"


def test_every_principal_is_shell_quoted_in_the_keytab_script():
    script = keytab()
    for principal in SEARCH:
        assert shlex.quote(principal) in script, f"{principal} must appear shlex-quoted"


@pytest.mark.processes
@pytest.mark.parametrize("runs_as", HOSTILE_RUNS_AS)
def test_hostile_runs_as_comes_out_quoted_in_the_scripts_and_escaped_in_the_rules(runs_as):
    names = kerberos.principals(runs_as, FQDN, REALM)
    hostile = names[0]
    quoted = shlex.quote(hostile)
    assert quoted != hostile, f"{hostile!r} needs quoting"
    script = keytab(names)
    assert quoted in script, f"{hostile!r} must appear as {quoted}"
    code = script.split("# --- components/scripts/", 1)[0]  # the values; the body names no principal
    if "'" in hostile:
        assert hostile not in code, f"{hostile!r} appears unquoted"
    else:
        assert code.count(hostile) == code.count(quoted), f"{hostile!r} appears unquoted"
    # the delete script prints the command an operator would paste: quoted there too
    advice = run_delete_script(names)
    assert f"delprinc -force {quoted}\n" in advice, f"the delete advice must quote {hostile!r}"
    text = sudoers.render(rules(names))
    assert f" getprinc {sudoers.escape(hostile)}," in text, f"the rule lists {hostile!r} escaped"
    unescaped = re.sub(r"\\.", "", text)
    assert not re.search(r"[*?\[\]]", unescaped.split("Cmnd_Alias", 1)[1]), "a wildcard is left unescaped"


@pytest.mark.parametrize("runs_as", UNLISTABLE_RUNS_AS)
def test_names_no_sudoers_rule_can_list_exactly_are_refused_everywhere(runs_as):
    names = kerberos.principals(runs_as, FQDN, REALM)
    for build in (lambda: keytab(names), lambda: delete(names), lambda: rules(names)):
        with pytest.raises(ValueError, match="sudoers|white space"):
            build()


@pytest.mark.parametrize("runs_as", ["-randkey", "--help"])
def test_runs_as_that_looks_like_an_option_is_rejected(runs_as):
    """kadmin.local would read a name that starts with '-' as an option."""
    names = kerberos.principals(runs_as, FQDN, REALM)
    for build in (lambda: keytab(names), lambda: rules(names)):
        with pytest.raises(ValueError, match="option"):
            build()


@pytest.mark.processes
def test_hostile_runs_as_is_one_bash_word():
    """bash itself reads the quoted name back as one word, unexpanded."""
    names = kerberos.principals("a;$(id)`id`", "h.example", REALM)
    script = keytab(names)
    array_line = next(line for line in script.splitlines() if line.startswith("principals=("))
    done = subprocess.run(["bash", "-c", f"{array_line}\nprintf '%s\\n' \"${{principals[@]}}\""],
                          capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == names, "the principals array must hold the names verbatim"


@pytest.mark.parametrize(
    "realm,names,why",
    [
        ("WIKIMEDIA", [], "no principals"),
        ("WIKIMEDIA", ["analytics/h.example"], "no realm"),
        ("WIKIMEDIA", ["analytics/h.example@OTHER"], "another realm"),
        ("WIKIMEDIA", ["analytics/h.example@wikimedia"], "realms are case-sensitive"),
        ("WIKIMEDIA", ["a/h@WIKIMEDIA", "a/h@WIKIMEDIA"], "duplicates"),
        ("", ["a/h@"], "empty realm"),
        ("WIKI MEDIA", ["a/h@WIKI MEDIA"], "a realm with a space"),
        ("WIKIMEDIA", ["-x/h@WIKIMEDIA"], "an option to kadmin.local"),
        ("WIKIMEDIA", ["a/h.example@WIKIMEDIA", "b/other.example@WIKIMEDIA"], "two service hosts"),
        ("WIKIMEDIA", ["nohost@WIKIMEDIA"], "no service host"),
        ("WIKIMEDIA", ["a/..@WIKIMEDIA"], "a host that is no host name"),
        ("WIKIMEDIA", ["/h.example@WIKIMEDIA"], "an empty primary"),
    ],
)
def test_scripts_and_rules_reject_principals_outside_the_realm_or_the_service_host(realm, names, why):
    for build in (lambda: keytab(names, realm=realm), lambda: delete(names, realm=realm),
                  lambda: kerberos.sudoers_rules("search", "pulumi-airflow", realm, names, TIMEOUT)):
        with pytest.raises(ValueError):
            build()
            pytest.fail(f"accepted: {why}")


@pytest.mark.parametrize("field_, value", [("kadmin_local", "kadmin.local"), ("rm", "/usr/bin/rm -rf"),
                                           ("spool_root", "/var/lib/../tmp"), ("spool_root", "/"),
                                           ("cat", "/usr/bin/c*t")])
def test_tool_paths_must_be_plain_absolute_paths(field_, value):
    with pytest.raises(ValueError, match=field_ if value != "/" else "spool"):
        kerberos.KdcTools(**{field_: value})


def test_the_body_calls_privileged_tools_only_through_as_root_with_absolute_paths_from_values():
    body = remote.script_file("kdc_keytab.sh")
    code = "\n".join(line for line in body.splitlines() if not line.lstrip().startswith("#"))
    assert code.count('"${sudo[@]}"') == 1, "one place puts sudo before a tool: as_root()"
    assert re.search(r'as_root\(\) \{\n    "\$\{sudo\[@\]\}" "\$timeout_bin" "--kill-after=\$\{tool_kill_after\}s" '
                     r'"\$\{tool_timeout\}s" "\$@"\n\}', code), "as_root = sudo + root's timeout + the tool"
    for tool in ("kadmin_local", "install_bin", "rm_bin", "cat_bin"):
        uses = re.findall(rf'(\S+) "\${tool}"', code)
        assert uses and all(u.endswith("as_root") for u in uses), f'"${tool}" must only ever run through as_root: {uses}'
    bare_rm = re.findall(r"(?:^\s*|[;&|]\s*)(rm\b.*)$", code, flags=re.MULTILINE)
    assert bare_rm == ['rm -rf -- "$workdir"'], f"the only unprivileged rm is of the user's own temp dir: {bare_rm}"
    for bare in ("kadmin.local", "sudo", "/usr/", "/bin/", "install", "cat", "timeout"):
        # in command position: a line's start, after ; & | or inside $( )
        assert not re.search(rf"(^\s*|[;&|]\s*|\$\(\s*){re.escape(bare)}\b", code, flags=re.MULTILINE), \
            f"the body runs {bare!r} itself; privileged tools come from the values, through as_root"
    calls = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("echo ", "printf ")))
    assert re.findall(r"\bktadd\b.*", calls) == ['ktadd -norandkey -k "$spool_keytab" "${principals[@]}" >&2'], \
        "one export, with -norandkey (a plain ktadd draws new keys), into the spool path"
    assert not re.search(r" -q\b", code), "kadmin.local -q always exits 0 and hides failures"


def test_keytab_is_verified_with_klist_and_only_base64_reaches_stdout_last():
    script = keytab()
    assert 'klist -k "$keytab"' in script, "the export must be checked with klist -k"
    assert '"${principals[@]}" >&2' in script, "ktadd's listing goes to stderr"
    # pulumi-command puts stdout in its error text when a command fails: the secret is printed
    # last, in one statement, after every check has passed
    assert re.search(r'\nencoded="\$\(base64 -w0 "\$keytab"\)"\nprintf \'%s\' "\$encoded"\n\Z', script), \
        "the keytab is encoded into a variable, then printed as the very last statement"
    code = [line for line in script.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert sum('"$encoded"' in line for line in code) == 1, "the encoded keytab is printed once, nowhere else"
    assert 'workdir="$(mktemp -d)"' in script and "trap cleanup EXIT" in script, "fresh temp dir, removed on exit"


def test_keytab_script_reads_no_stdin():
    """The script holds no secret, and its own stdin stays free (the normalizer goes by -c)."""
    script = keytab()
    body = script.split("# --- components/scripts/", 1)[1]
    code = "\n".join(line for line in body.splitlines() if not line.lstrip().startswith("#"))
    assert not re.search(r"(^\s*|[;&|]\s*|\$\(\s*)(read|cat)\b(?! --)", code, flags=re.MULTILINE), "nothing is read from stdin"
    assert 'python3 -c "$normalize_py" "$keytab"' in script, "the normalizer runs from its value"


def test_tool_kill_after_ends_the_group_before_sudo_or_the_step_would_kill_anything():
    # sudo 1.9.13 terminate_command: KILL 2 s after its TERM, to the PID only; remote.wrap: KILL after 30 s
    assert kerberos.TOOL_KILL_AFTER_SECONDS < 2, "root's timeout must KILL the group before command_timeout KILLs timeout"
    assert kerberos.TOOL_KILL_AFTER_SECONDS + 5 < remote.KILL_AFTER_SECONDS, \
        "the step must end (tool group gone) well before remote.wrap's KILL could hit sudo"


# --- the sudoers rules ----------------------------------------------------------------------

SEARCH_RULES = r"""# KDC (kdcHost krb1001.eqiad.wmnet): what the airflow Pulumi program runs as root over SSH as pulumi-airflow
# generated by components/sudoers.py; exact commands only, no shell and no wildcard
# airflow-search: Kerberos principals and keytab in realm WIKIMEDIA (components/kerberos.py)
# each tool runs under root's own timeout (600 s, the step's), which kills the tool's whole process group;
# ktadd writes only /var/lib/airflow-keytabs/airflow-search.discovery.wmnet/keytab, in a directory only root can write to
Cmnd_Alias AIRFLOW_SEARCH_KDC = \
    /usr/bin/timeout --kill-after\=1s 600s /usr/sbin/kadmin.local -r WIKIMEDIA getprinc krbtgt/WIKIMEDIA@WIKIMEDIA, \
    /usr/bin/timeout --kill-after\=1s 600s /usr/sbin/kadmin.local -r WIKIMEDIA getprinc analytics-search/airflow-search.discovery.wmnet@WIKIMEDIA, \
    /usr/bin/timeout --kill-after\=1s 600s /usr/sbin/kadmin.local -r WIKIMEDIA addprinc -randkey analytics-search/airflow-search.discovery.wmnet@WIKIMEDIA, \
    /usr/bin/timeout --kill-after\=1s 600s /usr/sbin/kadmin.local -r WIKIMEDIA getprinc airflow/airflow-search.discovery.wmnet@WIKIMEDIA, \
    /usr/bin/timeout --kill-after\=1s 600s /usr/sbin/kadmin.local -r WIKIMEDIA addprinc -randkey airflow/airflow-search.discovery.wmnet@WIKIMEDIA, \
    /usr/bin/timeout --kill-after\=1s 600s /usr/sbin/kadmin.local -r WIKIMEDIA getprinc HTTP/airflow-search.discovery.wmnet@WIKIMEDIA, \
    /usr/bin/timeout --kill-after\=1s 600s /usr/sbin/kadmin.local -r WIKIMEDIA addprinc -randkey HTTP/airflow-search.discovery.wmnet@WIKIMEDIA, \
    /usr/bin/timeout --kill-after\=1s 600s /usr/bin/install -d -m 0700 /var/lib/airflow-keytabs/airflow-search.discovery.wmnet, \
    /usr/bin/timeout --kill-after\=1s 600s /usr/bin/rm -f -- /var/lib/airflow-keytabs/airflow-search.discovery.wmnet/keytab, \
    /usr/bin/timeout --kill-after\=1s 600s /usr/sbin/kadmin.local -r WIKIMEDIA ktadd -norandkey -k /var/lib/airflow-keytabs/airflow-search.discovery.wmnet/keytab analytics-search/airflow-search.discovery.wmnet@WIKIMEDIA airflow/airflow-search.discovery.wmnet@WIKIMEDIA HTTP/airflow-search.discovery.wmnet@WIKIMEDIA, \
    /usr/bin/timeout --kill-after\=1s 600s /usr/bin/cat -- /var/lib/airflow-keytabs/airflow-search.discovery.wmnet/keytab
Defaults!AIRFLOW_SEARCH_KDC command_timeout=600
pulumi-airflow ALL = (root) NOPASSWD: AIRFLOW_SEARCH_KDC
"""


def test_search_rules_render_exactly():
    assert sudoers.render(rules()) == SEARCH_RULES, "the search stack's KDC rules changed: review, then update SEARCH_RULES"


def stack_cfg(stack: str) -> config.InstanceConfig:
    """The stack's validated config, loaded by the program's own loader under the mock runtime."""
    cfg_, secret_keys = stack_config(stack)
    got: dict = {}
    run = mockrun.run_program("airflow", stack, cfg_, secret_keys, program=lambda: got.update(cfg=config.load()[0]))
    assert run.error is None, f"{stack}: config does not load: {run.error}"
    return got["cfg"]


@pytest.fixture(scope="module")
def every_stack() -> dict[str, config.InstanceConfig]:
    return {stack: stack_cfg(stack) for stack in stackconfig.stacks()}


def stack_scripts(cfg: config.InstanceConfig) -> tuple[str, str]:
    names = kerberos.principals(cfg.runs_as_user, cfg.service_fqdn, cfg.kerberos_realm)
    seconds = cfg.command_timeout_minutes * 60
    return (kerberos.keytab_script(cfg.kerberos_realm, names, use_sudo=cfg.remote_sudo, timeout_seconds=seconds),
            kerberos.delete_script(cfg.kerberos_realm, names, use_sudo=cfg.remote_sudo, timeout_seconds=seconds))


def test_every_stacks_rules_are_exact_commands_of_its_own_values_and_no_shell(every_stack):
    assert len(every_stack) >= 13, f"the 13 reference stacks at least: {sorted(every_stack)}"
    for stack, cfg in every_stack.items():
        r = kerberos.stack_sudoers_rules(cfg)
        seconds = cfg.command_timeout_minutes * 60
        names = kerberos.principals(cfg.runs_as_user, cfg.service_fqdn, cfg.kerberos_realm)
        assert (r.user, r.alias, r.runas) == (cfg.ssh_user, sudoers.alias_for(cfg.instance, "kdc"), "root"), stack
        assert r.command_timeout_seconds == seconds, f"{stack}: command_timeout is the step's timeout"
        assert r.env_keep == (), f"{stack}: no environment passes to root"
        for argv in r.commands:
            assert argv[:3] == ("/usr/bin/timeout", "--kill-after=1s", f"{seconds}s"), \
                f"{stack}: {argv} does not run under root's timeout of the step's length"
            tool = argv[3]
            assert tool in ("/usr/sbin/kadmin.local", "/usr/bin/install", "/usr/bin/rm", "/usr/bin/cat"), \
                f"{stack}: unexpected tool {tool}"
            assert not any(a in ("ALL", "-q", "-s", "-i", "sh", "bash", "/bin/sh", "/bin/bash") for a in argv), \
                f"{stack}: {argv} holds a shell or a catch-all"
            if tool == "/usr/sbin/kadmin.local":
                assert argv[4:6] == ("-r", cfg.kerberos_realm), f"{stack}: kadmin.local without -r REALM: {argv}"
                verb = argv[6]
                assert verb in ("getprinc", "addprinc", "ktadd"), f"{stack}: kadmin.local {verb} is not needed"
                if verb == "addprinc":
                    assert argv[7] == "-randkey", f"{stack}: addprinc without -randkey"
                if verb == "ktadd":
                    assert argv[7:9] == ("-norandkey", "-k") and list(argv[10:]) == names, f"{stack}: {argv}"
        text = sudoers.render(r)
        body = text.split("Cmnd_Alias", 1)[1]
        assert not re.search(r"(?<!\\)[*?\[\]]", body), f"{stack}: an unescaped wildcard in the rules"
        for name in names:
            assert sum(f"addprinc -randkey {name}," in line or line.endswith(f"addprinc -randkey {name}")
                       for line in text.splitlines()) == 1, f"{stack}: one addprinc rule for {name}"


@pytest.mark.processes
def test_every_stacks_scripts_are_shellcheck_clean(every_stack):
    assert SHELLCHECK, "shellcheck is not installed: tools/system-packages.sh installs it"
    texts = {}
    for stack, cfg in every_stack.items():
        for kind, script in zip(("keytab", "delete"), stack_scripts(cfg)):
            texts.setdefault(script, f"{stack} {kind}")
    assert len(texts) >= 2 * len(every_stack), "every stack has its own keytab and delete script"
    failures = []
    for script, where in texts.items():
        done = subprocess.run([SHELLCHECK, "-s", "bash", "-"], input=script, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            failures.append(f"{where}:\n{done.stdout}")
    assert not failures, "shellcheck findings:\n" + "\n".join(failures)


@pytest.mark.parametrize("stack", STACKS)
def test_the_registered_command_runs_exactly_the_scripts_built_from_the_stacks_values(stack, every_stack):
    cfg = every_stack[stack]
    cmd = rendered(stack).named(f"{stack}-kerberos-keytab")
    script, delete_ = stack_scripts(cfg)
    seconds = cfg.command_timeout_minutes * 60
    assert cmd.inputs["create"] == remote.wrap(script, cmd.name, seconds), \
        f"{stack}: create is the keytab script as the SSH user (no sudo around the shell)"
    assert cmd.inputs["delete"] == remote.wrap(delete_, cmd.name, seconds), f"{stack}: delete"
    assert "sudo -n timeout" not in cmd.inputs["create"] and not cmd.inputs["create"].startswith("sudo"), \
        f"{stack}: no generated command asks sudo for a shell"


# --- the component under Pulumi's mocks ---------------------------------------------------

class KeytabMocks(mockrun.Mocks):
    def new_resource(self, args: pm.MockResourceArgs):
        name, outputs = super().new_resource(args)
        if args.typ == "command:remote:Command":
            outputs["stdout"] = "QkFTRTY0\n"
        return name, outputs


def render_keytab(use_sudo: bool = True, with_precondition: bool = False):
    def program():
        # a stand-in for the namespace read: a resource the remote step must wait for
        after = [command.local.Command("precondition", create="true")] if with_precondition else []
        keytab_ = kerberos.KerberosKeytab(
            "search",
            kerberos.KerberosKeytabArgs(
                realm=REALM,
                principals=SEARCH,
                conn=command.remote.ConnectionArgs(host="krb1001.eqiad.wmnet", user="deploy",
                                                   private_key=pulumi.Output.secret("KEY"), host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKaQlgHMVkTqY0HnPm1i8y5/TKASgAzqhyhQwFNnQYnU"),
                use_sudo=use_sudo,
                timeout_minutes=7,
                depends_on=after,
            ),
        )
        pulumi.export("keytab", keytab_.keytab_base64)

    run = mockrun.run_program("airflow", "search", {}, program=program, mocks=KeytabMocks())
    if run.error is not None:
        raise run.error
    return run.monitor


def test_component_creates_one_protected_secret_command():
    monitor = render_keytab()
    component = monitor.one("dpe:airflow:KerberosKeytab")
    cmd = monitor.one("command:remote:Command")
    assert cmd.name == "search-keytab", "the Command is named after the component"
    assert cmd.parent == component.urn, "the Command is the component's child"
    assert cmd.protect, "the keytab Command is protected"
    assert cmd.delete_before_replace, "the keytab Command is deleted before it is replaced"
    assert {"stdout", "stderr"} <= set(cmd.additional_secret_outputs), "stdout (the keytab) is secret"
    assert cmd.inputs["logging"] == "stderr", "the Command logs stderr only (stdout is the keytab)"
    # 7 minutes on the remote host (420 s), + 30 s kill-after + 60 s for the engine
    assert cmd.custom_timeouts == {"create": "510s", "update": "510s", "delete": "510s"}, "timeouts"


@pytest.mark.parametrize("use_sudo", [True, False], ids=["sudo", "root"])
def test_component_runs_the_script_as_the_ssh_user_with_sudo_only_inside(use_sudo):
    cmd = render_keytab(use_sudo=use_sudo).one("command:remote:Command")
    script = keytab(use_sudo=use_sudo, timeout=420)
    assert cmd.inputs["create"] == remote.wrap(script, "search-keytab", 420), \
        "create: the script under the remote timeout, no sudo around the shell"
    assert inner_script(cmd.inputs["create"]) == script, "the login shell hands the script to /bin/bash -c"
    assert not re.search(r"sudo[^;]*/bin/bash", cmd.inputs["create"]), "no sudo around the shell"
    assert ("\nsudo=(sudo -n)\n" in script) is use_sudo, "the stack's remoteSudo decides the sudo array inside"
    assert cmd.inputs["delete"] == remote.wrap(delete(use_sudo=use_sudo, timeout=420), "search-keytab", 420), \
        "delete is the notice, as the SSH user too"
    assert "stdin" not in cmd.inputs, "the keytab script takes nothing on stdin"


def test_component_waits_for_its_preconditions():
    monitor = render_keytab(with_precondition=True)
    precondition = monitor.one("command:local:Command")
    cmd = monitor.one("command:remote:Command")
    assert precondition.urn in cmd.dependencies, "search-keytab must depend on the preconditions (depends_on)"
    assert render_keytab().one("command:remote:Command").dependencies == [], "no preconditions, no dependencies"


def test_component_triggers_on_realm_and_principals():
    cmd = render_keytab().one("command:remote:Command")
    assert cmd.inputs["triggers"] == [REALM, *SEARCH], "a new realm or principal set means a new keytab"
    assert "triggers[*]" in cmd.replace_on_changes, "a trigger change replaces the Command"


def test_component_exposes_the_keytab_as_a_stripped_secret():
    monitor = render_keytab()
    component = monitor.one("dpe:airflow:KerberosKeytab")
    output = monitor.outputs[component.urn]["keytab_base64"]
    assert isinstance(output, mockrun.SecretLeaf), "keytab_base64 must be secret"
    assert output.value == "QkFTRTY0", "keytab_base64 is the stdout without whitespace"
    exported = monitor.stack_outputs["keytab"]
    assert isinstance(exported, mockrun.SecretLeaf), "an export of the keytab stays secret"


# --- the scripts run against a stand-in KDC, through a recording sudo -----------------------
#
# pulumi-command puts the command's output in its error text when the command fails, whatever
# ``logging`` says, so the keytab (stdout) must reach stdout only once every check has passed.
# A stand-in kadmin.local and klist (below; the real ones: tests/integration/test_kerberos_kdc.py)
# drive the script through each failure, and stdout must then be empty.

FAKE_KADMIN = textwrap.dedent('''\
    """Enough of MIT kadmin.local (-r REALM getprinc/addprinc/ktadd) for the keytab script."""
    import fnmatch, hashlib, json, os, struct, sys
    state = os.environ["FAKE_KDC_DIR"]
    with open(os.path.join(state, "calls.jsonl"), "a") as log:
        log.write(json.dumps(sys.argv[1:]) + "\\n")
    db_file = os.path.join(state, "principals.json")
    db = json.load(open(db_file))
    if sys.argv[1:2] != ["-r"]:
        sys.exit("fake kadmin.local: -r REALM expected")
    realm, verb, rest = sys.argv[2], sys.argv[3], sys.argv[4:]
    if verb == "getprinc":
        (name,) = rest
        if name in db:
            print("Principal: %s\\nKey: vno 1, aes256-cts-hmac-sha1-96" % name)
        elif os.environ.get("FAKE_GETPRINC_ERROR"):
            print("get_principal: %s while retrieving \\"%s\\"." % (os.environ["FAKE_GETPRINC_ERROR"], name), file=sys.stderr)
            sys.exit(1)
        else:
            print("get_principal: Principal does not exist while retrieving \\"%s\\"." % name, file=sys.stderr)
            sys.exit(1)
    elif verb == "addprinc":
        assert rest[0] == "-randkey", rest
        name = rest[1]
        if os.environ.get("FAKE_ADDPRINC_FAILS"):
            print("add_principal: Insufficient access while creating \\"%s\\"." % name, file=sys.stderr)
            sys.exit(1)
        if not fnmatch.fnmatchcase(name, os.environ.get("FAKE_SKIP_ADDPRINC", "\\0")):
            db.append(name)
            json.dump(db, open(db_file, "w"))
        print("Principal \\"%s\\" created." % name)
    elif verb == "ktadd":
        assert rest[:2] == ["-norandkey", "-k"], rest
        path, names = rest[2], rest[3:]
        if os.environ.get("FAKE_KTADD_GARBAGE"):
            open(path, "wb").write(b"not a keytab")
            sys.exit(0)
        records = []
        for name in names:
            if name not in db:  # MIT ktadd skips it, says so, and still exits 0
                print("kadmin.local: Principal %s does not exist." % name, file=sys.stderr)
                continue
            primary, _, name_realm = name.rpartition("@")
            body = struct.pack(">H", len(primary.split("/")))
            for part in [name_realm] + primary.split("/"):
                body += struct.pack(">H", len(part)) + part.encode()
            key = hashlib.sha256(name.encode()).digest()  # the principal's current key, stable
            body += struct.pack(">IIBHH", 1, 1700000000 + len(records), 1, 18, len(key)) + key
            records.append(struct.pack(">i", len(body)) + body)
            print("Entry for principal %s with kvno 1, encryption type aes256-cts-hmac-sha1-96 added to keytab WRFILE:%s." % (name, path))
        if records:  # like MIT: a new file gets the version, an existing one is appended to
            new = not os.path.exists(path) or os.path.getsize(path) == 0
            with open(path, "ab") as f:
                f.write((b"\\x05\\x02" if new else b"") + b"".join(records))
    else:
        sys.exit("fake kadmin.local: unsupported %s" % verb)
''')

FAKE_KLIST = textwrap.dedent('''\
    """klist -k FILE: the principals of a version 0x0502 keytab, as MIT klist lists them."""
    import os, struct, sys
    if os.environ.get("FAKE_KLIST_FAILS"):
        print("klist: Unsupported key table format version number while starting keytab scan", file=sys.stderr)
        sys.exit(1)
    assert sys.argv[1] == "-k", sys.argv
    path = sys.argv[2]
    data = open(path, "rb").read()
    print("Keytab name: FILE:%s\\nKVNO Principal\\n---- " % path + "-" * 60)
    pos = 2
    while pos < len(data):
        (size,) = struct.unpack_from(">i", data, pos)
        pos += 4
        p = pos
        (count,) = struct.unpack_from(">H", data, p)
        p += 2
        parts = []
        for _ in range(count + 1):
            (length,) = struct.unpack_from(">H", data, p)
            parts.append(data[p + 2:p + 2 + length].decode())
            p += 2 + length
        print("   1 %s@%s" % ("/".join(parts[1:]), parts[0]))
        pos += size
''')

# sudo -n ARGV...: records ARGV, then runs it (as this user: the rules are checked against the record).
# FAKE_SUDO_MAP {"production path": "stand-in"} rewrites arguments starting with a key (the stacks'
# own scripts name the production tools and spool).
FAKE_SUDO = textwrap.dedent('''\
    import json, os, sys
    assert sys.argv[1] == "-n", sys.argv
    argv = sys.argv[2:]
    with open(os.path.join(os.environ["FAKE_KDC_DIR"], "sudo.jsonl"), "a") as log:
        log.write(json.dumps(argv) + "\\n")
    mapping = json.loads(os.environ.get("FAKE_SUDO_MAP", "{}"))
    def mapped(arg):
        for prefix, to in mapping.items():
            if arg == prefix or arg.startswith(prefix + "/"):
                return to + arg[len(prefix):]
        return arg
    argv = [mapped(a) for a in argv]
    os.execv(argv[0], argv)
''')

FAKE_BASE64_FAILS = "#!/bin/sh\nprintf 'BFAKEPARTIAL'\nexit 1\n"  # a partial result, then failure


class FakeKdc:
    def __init__(self, root: Path):
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir()
        for name, source in (("kadmin.local", FAKE_KADMIN), ("klist", FAKE_KLIST), ("sudo", FAKE_SUDO)):
            tool = self.bin / name
            tool.write_text(f"#!{sys.executable}\n{source}")
            tool.chmod(0o755)
        self.principals([f"krbtgt/{REALM}@{REALM}"])
        self.spool_root = root / "spool"
        self.tools = kerberos.KdcTools(kadmin_local=str(self.bin / "kadmin.local"), spool_root=str(self.spool_root))
        self.spool_keytab = self.spool_root / FQDN / "keytab"
        # no /usr/sbin: the host's real kadmin.local must not be found
        self.env = {"PATH": f"{self.bin}:/usr/bin:/bin", "FAKE_KDC_DIR": str(root), "HOME": str(root),
                    "TMPDIR": str(self.scratch())}

    def scratch(self) -> Path:
        path = self.root / "scratch"
        path.mkdir(exist_ok=True)
        return path

    def principals(self, names: list[str]) -> None:
        (self.root / "principals.json").write_text(json.dumps(names))

    def stored(self) -> list[str]:
        return json.loads((self.root / "principals.json").read_text())

    def calls(self) -> list[list[str]]:
        return self._jsonl("calls.jsonl")

    def sudo_calls(self) -> list[tuple[str, ...]]:
        return [tuple(c) for c in self._jsonl("sudo.jsonl")]

    def _jsonl(self, name: str) -> list:
        path = self.root / name
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def base64_fails(self) -> None:
        tool = self.bin / "base64"
        tool.write_text(FAKE_BASE64_FAILS)
        tool.chmod(0o755)

    def script(self, use_sudo: bool = True) -> str:
        return keytab(use_sudo=use_sudo, timeout=60, tools=self.tools)

    def rules(self) -> sudoers.HostRules:
        return rules(timeout=60, tools=self.tools)

    def run(self, script: str | None = None, use_sudo: bool = True, **env: str) -> subprocess.CompletedProcess:
        script = script if script is not None else self.script(use_sudo)
        return subprocess.run(["/bin/bash", "-c", script, "search-keytab"], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, env={**self.env, **env}, timeout=60)

    def run_wrapped(self, use_sudo: bool = True, **env: str) -> subprocess.CompletedProcess:
        """As the Command runs it: the wrap() line, by sh (the login shell)."""
        line = remote.wrap(self.script(use_sudo), "search-keytab", 60)
        return subprocess.run(["/bin/sh", "-c", line], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, env={**self.env, **env}, timeout=60)


@pytest.fixture
def kdc(tmp_path) -> FakeKdc:
    return FakeKdc(tmp_path)


def keytab_principals(encoded: str) -> list[str]:
    """The principals of a base64 keytab, and a check that every timestamp is zeroed."""
    data = base64.b64decode(encoded, validate=True)
    assert data[:2] == b"\x05\x02", "a version 0x0502 keytab"
    names, pos = [], 2
    while pos < len(data):
        (size,) = struct.unpack_from(">i", data, pos)
        p = pos + 4
        (count,) = struct.unpack_from(">H", data, p)
        p += 2
        parts = []
        for _ in range(count + 1):
            (length,) = struct.unpack_from(">H", data, p)
            parts.append(data[p + 2:p + 2 + length].decode())
            p += 2 + length
        assert data[p + 4:p + 8] == b"\0\0\0\0", f"the timestamp of {parts} is zeroed"
        names.append("/".join(parts[1:]) + "@" + parts[0])
        pos += 4 + size
    return names


def assert_nothing_left(kdc: FakeKdc) -> None:
    assert not kdc.spool_keytab.exists(), "root's spool copy of the keytab must be removed"
    assert list(kdc.scratch().iterdir()) == [], f"the script's temp dir must be removed: {list(kdc.scratch().iterdir())}"


@pytest.mark.processes
@pytest.mark.parametrize("use_sudo", [True, False], ids=["sudo", "root"])
def test_keytab_script_prints_only_the_keytab_on_stdout(kdc, use_sudo):
    done = kdc.run(use_sudo=use_sudo)
    assert done.returncode == 0, done.stderr
    encoded = done.stdout
    assert encoded and "\n" not in encoded, f"stdout is the base64 alone, one line, no newline: {done.stdout!r}"
    assert keytab_principals(encoded) == SEARCH, "the keytab holds every principal, in order"
    assert sorted(kdc.stored()) == sorted([f"krbtgt/{REALM}@{REALM}", *SEARCH]), "the principals were created"
    for principal in SEARCH:
        assert f"created: {principal}" in done.stderr, f"progress for {principal} on stderr"
    assert encoded not in done.stderr, "the keytab never reaches stderr (the log)"
    assert_nothing_left(kdc)
    assert oct(os.stat(kdc.spool_root / FQDN).st_mode & 0o777) == "0o700", "the instance's spool is root's alone (0700)"
    assert bool(kdc.sudo_calls()) is use_sudo, "privileged calls go through sudo exactly when use_sudo"
    again = kdc.run(use_sudo=use_sudo)
    assert again.returncode == 0 and again.stdout == done.stdout, "a re-run prints the same bytes"
    assert all(f"exists: {principal}" in again.stderr for principal in SEARCH), "a re-run creates nothing"
    wrapped = kdc.run_wrapped(use_sudo=use_sudo)
    assert (wrapped.returncode, wrapped.stdout) == (0, done.stdout), f"the same through the Command's line: {wrapped}"


@pytest.mark.processes
def test_every_sudo_call_is_exactly_one_rule_and_every_rule_is_used(kdc):
    first = kdc.run()
    assert first.returncode == 0, first.stderr
    second = kdc.run()
    assert second.returncode == 0, second.stderr
    kdc.spool_keytab.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["/bin/bash", "-c", delete(timeout=60, tools=kdc.tools), "delete"], capture_output=True,
                          text=True, env=kdc.env, timeout=60)
    assert done.returncode == 0, done.stderr
    listed = kdc.rules().commands
    calls = kdc.sudo_calls()
    assert len(calls) > len(listed), f"the runs made their privileged calls: {calls}"
    for call in calls:
        matches = [argv for argv in listed if argv == call]
        assert len(matches) == 1, f"sudo {call} matches {len(matches)} rules (exactly one expected)"
        assert sudoers.command_line(call) in sudoers.render(kdc.rules()), f"{call} is in the rendered text"
    assert set(calls) == set(listed), f"rules never used: {set(listed) - set(calls)}"
    assert kdc.calls()[0] == ["-r", REALM, "getprinc", f"krbtgt/{REALM}@{REALM}"], "the realm is checked first"


@pytest.mark.processes
@pytest.mark.parametrize("stack", STACKS)
def test_a_stacks_own_script_asks_sudo_only_for_its_own_rules(kdc, every_stack, stack):
    """The exact text the stack registers (production paths), run with its paths mapped to the
    stand-ins: every sudo call is one of that stack's rules, and the first run uses them all.
    (Every stack's script comes from the same builder with its own values: the static checks
    above cover all of them.)"""
    mapping = {"/usr/sbin/kadmin.local": str(kdc.bin / "kadmin.local"), "/var/lib/airflow-keytabs": str(kdc.spool_root)}
    assert not Path("/var/lib/airflow-keytabs").exists(), "this host has a real keytab spool; the test would use it"
    for cfg in (every_stack[stack],):
        names = kerberos.principals(cfg.runs_as_user, cfg.service_fqdn, cfg.kerberos_realm)
        kdc.principals([f"krbtgt/{cfg.kerberos_realm}@{cfg.kerberos_realm}"])
        (kdc.root / "sudo.jsonl").unlink(missing_ok=True)
        script = inner_script(rendered(stack).named(f"{stack}-kerberos-keytab").inputs["create"])
        assert script == stack_scripts(cfg)[0], f"{stack}: the registered script is the one built from its values"
        assert cfg.remote_sudo, f"{stack}: the reference stacks run with remoteSudo"
        done = kdc.run(script, FAKE_SUDO_MAP=json.dumps(mapping))
        assert done.returncode == 0, f"{stack}: {done.stderr}"
        assert keytab_principals(done.stdout) == names, f"{stack}: the keytab of its principals"
        listed = kerberos.stack_sudoers_rules(cfg).commands
        calls = kdc.sudo_calls()
        assert calls and [c for c in calls if listed.count(c) != 1] == [], \
            f"{stack}: sudo calls that are not exactly one of its rules: {[c for c in calls if c not in listed]}"
        assert set(calls) == set(listed), f"{stack}: rules its first run does not use: {set(listed) - set(calls)}"


@pytest.mark.parametrize(
    "setup, env, says",
    [
        ("no-krbtgt", {}, "is not served by the KDC database on this host"),
        ("", {"FAKE_GETPRINC_ERROR": "Cannot open DB2 database"}, "getprinc analytics-search/"),
        ("", {"FAKE_ADDPRINC_FAILS": "1"}, "addprinc analytics-search/"),
        ("", {"FAKE_SKIP_ADDPRINC": "HTTP/*"}, "missing from the exported keytab: HTTP/"),
        ("", {"FAKE_SKIP_ADDPRINC": "*"}, "ktadd wrote no keytab"),
        ("", {"FAKE_KTADD_GARBAGE": "1"}, "not a version 0x0502 keytab"),
        ("", {"FAKE_KLIST_FAILS": "1"}, "klist -k cannot read the exported keytab"),
        ("base64-fails", {}, ""),
    ],
    ids=["realm-not-served", "getprinc-fails", "addprinc-fails", "principal-missing-from-keytab",
         "no-keytab-written", "keytab-unreadable", "klist-fails", "base64-fails"],
)
@pytest.mark.processes
def test_a_failing_keytab_script_prints_nothing_on_stdout(kdc, setup, env, says):
    if setup == "no-krbtgt":
        kdc.principals([])
    if setup == "base64-fails":
        kdc.base64_fails()
    for done in (kdc.run(**env), kdc.run_wrapped(**env)):
        assert done.returncode != 0, f"the script must fail: {done}"
        assert done.returncode not in remote.TIMED_OUT, f"a failure, not a time-out: {done}"
        assert done.stdout == "", f"stdout (the secret channel, in the error text) must be empty: {done.stdout!r}"
        assert says in done.stderr, f"the reason is on stderr: {done.stderr!r}"
        assert "BFAKEPARTIAL" not in done.stderr, "a partial keytab never reaches stderr"
        assert_nothing_left(kdc)
    assert kdc.calls(), "the stand-in KDC was used"


@pytest.mark.processes
@pytest.mark.parametrize("unsafe", ["symlink", "world-writable", "group-writable", "not-root-owned", "a-file"])
def test_an_unsafe_spool_is_refused_before_anything_is_created(kdc, unsafe):
    """root writes the keytab under the spool: one another user could write to is refused first."""
    elsewhere = kdc.root / "elsewhere"
    elsewhere.mkdir()
    if unsafe == "symlink":
        kdc.spool_root.symlink_to(elsewhere)
    elif unsafe == "a-file":
        kdc.spool_root.write_text("")
    else:
        kdc.spool_root.mkdir()
        if unsafe == "world-writable":
            kdc.spool_root.chmod(0o1777)
        elif unsafe == "group-writable":
            kdc.spool_root.chmod(0o775)
        else:
            os.chown(kdc.spool_root, 65534, 65534)
    done = kdc.run()
    assert done.returncode != 0 and done.stdout == "", f"an unsafe spool ({unsafe}) must stop the step: {done}"
    assert "keytab spool" in done.stderr and str(kdc.spool_root) in done.stderr, f"the reason: {done.stderr!r}"
    assert kdc.calls() == [["-r", REALM, "getprinc", f"krbtgt/{REALM}@{REALM}"]], \
        "only the read-only realm check ran: nothing created, nothing exported"
    assert list(elsewhere.iterdir()) == [], "nothing was written through the spool"


@pytest.mark.processes
def test_a_keytab_left_in_the_spool_is_replaced_not_appended_to(kdc):
    clean = kdc.run()
    assert clean.returncode == 0, clean.stderr
    # an interrupted run left root's copy behind (or someone put a file there): ktadd would append
    kdc.spool_keytab.write_bytes(base64.b64decode(clean.stdout))
    again = kdc.run()
    assert again.returncode == 0, again.stderr
    assert again.stdout == clean.stdout, "the export starts from an empty file: the same keytab, no duplicate entries"
    assert_nothing_left(kdc)


@pytest.mark.processes
def test_two_exports_in_one_file_are_refused_by_the_normalizer(kdc):
    """What two runs at the same time would leave (both appended to root's file): refused."""
    first = kdc.run()
    assert first.returncode == 0, first.stderr
    doubled = kdc.root / "doubled.keytab"
    data = base64.b64decode(first.stdout)
    doubled.write_bytes(data + data[2:])
    done = subprocess.run([sys.executable, "-c", remote.script_file("kdc_keytab_normalize.py"), str(doubled)],
                          capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "two exports were appended to one file" in done.stderr, done
    assert doubled.read_bytes() == data + data[2:], "a refused keytab is left as it was"


@pytest.mark.processes
def test_the_normalizer_skips_holes_and_zeroes_every_timestamp(kdc):
    first = kdc.run()
    data = bytearray(base64.b64decode(first.stdout))
    hole = struct.pack(">i", -6) + b"\xff" * 6  # a removed entry: negative size, then its bytes
    stamped = kdc.root / "stamped.keytab"
    # put the timestamps back and a hole after the version
    with_time = bytes(data).replace(b"\0\0\0\0\x01\x00\x12", b"\x65\x4c\x4b\x00\x01\x00\x12")
    assert with_time != bytes(data), "set-up: timestamps put back"
    stamped.write_bytes(with_time[:2] + hole + with_time[2:])
    done = subprocess.run([sys.executable, "-c", remote.script_file("kdc_keytab_normalize.py"), str(stamped)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert stamped.read_bytes() == bytes(data[:2]) + hole + bytes(data[2:]), "timestamps zeroed, the hole kept"


# --- the delete script ----------------------------------------------------------------------

def run_delete_script(names: list[str], **env: str) -> str:
    """stderr of the delete script, run with no sudo or kadmin.local reachable; it must succeed quietly."""
    script = delete(names)
    done = subprocess.run(["/bin/bash", "-c", script, "delete"], capture_output=True, text=True,
                          env={"PATH": "/nonexistent", **env}, check=False)
    assert done.returncode == 0 and done.stdout == "", f"delete must be a quiet no-op: {done}"
    return done.stderr


@pytest.mark.processes
def test_delete_script_prints_the_kept_instructions():
    """The delete output and the manual steps (kerberos.kept_instructions) say the same thing."""
    kept = kerberos.kept_instructions(REALM, SEARCH)
    stderr = run_delete_script(SEARCH)
    assert stderr.endswith("\n".join(kept) + "\n"), "the delete script prints kept_instructions on stderr"
    assert f"could not remove {SPOOL}/keytab" in stderr, "a failed spool clean-up is said, and not fatal"
    for principal in SEARCH:
        assert f"  sudo kadmin.local -r WIKIMEDIA delprinc -force {principal}" in kept, f"manual step for {principal}"
    assert f"  and the instance's empty keytab spool: sudo rmdir {SPOOL}" in kept, "the spool directory is named"


@pytest.mark.processes
def test_delete_script_deletes_nothing_but_roots_spool_copy(kdc):
    kdc.spool_keytab.parent.mkdir(parents=True)
    kdc.spool_keytab.write_bytes(b"\x05\x02left by an interrupted run")
    before = kdc.stored()
    done = subprocess.run(["/bin/bash", "-c", delete(timeout=60, tools=kdc.tools), "delete"], capture_output=True,
                          text=True, env=kdc.env, timeout=60)
    assert done.returncode == 0 and done.stdout == "", done
    assert not kdc.spool_keytab.exists(), "root's leftover copy of the keytab is removed"
    assert kdc.stored() == before and kdc.calls() == [], "no principal touched, kadmin.local never run"
    assert kdc.sudo_calls() == [kdc.rules().commands[-3]], "the one sudo call is the rm rule"
    assert "could not remove" not in done.stderr, done.stderr
