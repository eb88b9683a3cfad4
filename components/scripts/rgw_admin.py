"""radosgw-admin for the RGW user step, run as root by sudo on the RGW admin host.

Shipped by components/rgw_user.py inside the RGW user script (value ``rgw_admin_py``, this file
base64-encoded into ``exec(...)``) and run as ``sudo -n PYTHON3 -I -c "$rgw_admin_py" RADOSGW_ADMIN
WORDS...``.  The host's sudoers rules (rgw_user.sudoers_rules) list every such argv exactly,
this code included, so sudo runs this code and nothing else.  Written for python3 >= 3.7.

Why not ``sudo radosgw-admin`` with ``env_keep += "CEPH_ARGS"``: radosgw-admin reads the key pair
only from its arguments, and every Ceph tool also parses CEPH_ARGS (ceph env_to_vec).  A caller
who may set CEPH_ARGS for a root radosgw-admin may add ANY option the argv does not give
(checked on Ceph 16.2.15: ``--caps=users=*``, ``--admin``, ``--system`` on ``user create``;
``--uid=<anyone>`` on a ``user info`` without one, which prints that user's secret keys;
``--log-file=<any path>``, a root-owned file anywhere; ``-- rm`` turns ``user`` into
``user rm``).  Here the caller gives only the key pair, on stdin; this code checks its shape
and builds CEPH_ARGS from it alone, in an environment of its own.

What it does besides:

* ``key create --uid=U`` for a U that does not exist makes radosgw-admin act on the OWNER of
  the access key (it looks the user up by access key when the uid is unknown) and rewrite
  that user's secret (exit 0, Ceph 16.2.15): refused here unless ``user info --uid=U`` finds U.
  (For an existing U, radosgw-admin itself refuses another user's access key: exit 241.)
* radosgw-admin's stderr goes through with the two keys replaced by ``<access key>`` and
  ``<secret key>`` (its "existing S3 key in RGW system:<access key>" names the key).
* Stopping: the unprivileged step cannot signal a root process, and sudo may be KILLed by
  the step's timeout before it relays a signal.  So radosgw-admin runs in a process group of
  its own, which is KILLed when this process gets TERM, HUP or INT (sudo relays those; sudo's
  command_timeout sends HUP and TERM), or when sudo dies (PR_SET_PDEATHSIG); radosgw-admin
  itself gets KILL if this process dies.
"""

import ctypes
import os
import re
import signal
import subprocess
import sys

FORMS = {("user", "info"): False, ("user", "create"): True, ("key", "create"): True}  # form -> takes the keys
PR_SET_PDEATHSIG = 1
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def fail(message):
    sys.stderr.write("rgw-admin: %s\n" % message)
    sys.exit(2)


def die_with_parent(signum):
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)


tool, words = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 2 else ("", [])
keyed = FORMS.get(tuple(words[:2]))
uids = [w for w in words if w.startswith("--uid=")]
if keyed is None or len(uids) != 1 or not tool.startswith("/"):
    fail("usage: python3 -I -c CODE /path/to/radosgw-admin user info|user create|key create --uid=UID ...")
# sudo's env_reset leaves no CEPH_CONF; a root SSH user's own CEPH_CONF is kept
env = dict(ENV, **{k: os.environ[k] for k in ("CEPH_CONF",) if k in os.environ})

child = None
spawning = False
stopped = 0


def kill_group():
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:  # already gone
        pass


def stop(signum, _frame):
    global stopped
    stopped = signum
    if child is not None:
        kill_group()
    elif not spawning:  # nothing started (yet): nothing to wait for
        os._exit(128 + signum)


for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
    signal.signal(s, stop)
die_with_parent(signal.SIGTERM)
if os.getppid() == 1:  # sudo was gone before the line above
    sys.exit(128 + signal.SIGTERM)

secrets = []
if keyed:
    data = sys.stdin.buffer.read(600)
    m = re.fullmatch(rb"([A-Za-z0-9]{16,128})\n([A-Za-z0-9+/]{20,128})\n?", data)
    if not m:
        fail("stdin: expected two lines, the access key (16-128 letters/digits) and the "
             "secret key (20-128 letters/digits/+/)")
    secrets = [(m.group(1).decode(), "<access key>"), (m.group(2).decode(), "<secret key>")]


def run(argv, extra_env, stdout):
    """radosgw-admin ``argv`` in its own process group; its exit status (it is KILLed if we are stopped)."""
    global child, spawning
    spawning = True
    try:
        child = subprocess.Popen(["radosgw-admin"] + argv, executable=tool, stdin=subprocess.DEVNULL, stdout=stdout,
                                 stderr=subprocess.PIPE, env=dict(env, **extra_env), start_new_session=True,
                                 preexec_fn=lambda: die_with_parent(signal.SIGKILL))
    except OSError as e:
        fail("cannot run %s: %s" % (tool, e.strerror))
    finally:
        spawning = False
    if stopped:
        kill_group()
    err = child.stderr.read().decode("utf-8", "replace")
    rc = child.wait()
    child = None
    for secret, name in secrets:
        err = err.replace(secret, name)
    sys.stderr.write(err)
    sys.stderr.flush()
    if stopped:
        sys.exit(128 + stopped)
    return rc


if words[:2] == ["key", "create"]:
    rc = run(["user", "info", uids[0]], {}, subprocess.DEVNULL)
    if rc == 22:
        fail("%s does not exist: refusing key create, which radosgw-admin would apply to the owner of the "
             "access key" % uids[0])
    if rc != 0:
        fail("radosgw-admin user info %s failed (exit %d)" % (uids[0], rc))
keys = {"CEPH_ARGS": "--access-key=%s --secret-key=%s" % tuple(s for s, _ in secrets)} if keyed else {}
sys.exit(run(words, keys, None))
