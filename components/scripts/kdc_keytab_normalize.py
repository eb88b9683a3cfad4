"""Zero the timestamp of every entry of a version 0x0502 keytab, in place; refuse duplicates.

Shipped by components/kerberos.py inside the keytab script (the value normalize_py) and run on
the KDC host as the SSH user, on the user's own copy of the keytab, as python3 -c with the
keytab's path as its one argument.  Written for any python3 >= 3.5 (every Debian KDC host).
(No dollar sign or backquote in this file: it is single-quoted into the script.)

The layout is MIT's keytab file format: after the 2-byte version, each record is a signed
32-bit size (negative: a hole left by a removed entry) followed by num_components (16 bits),
the realm and the components (16-bit length + bytes each), name_type (32 bits), the timestamp
(32 bits), the 8-bit kvno, the key block (16-bit enctype, 16-bit length + bytes) and, when the
record has room for it, a 32-bit kvno.

Each entry carries its export time, so two exports of the same keys differ; with the timestamps
zeroed a re-run prints the same bytes (kinit ignores the field).  Two entries for the same
principal, key version and enctype mean two exports were appended to one file (ktadd appends:
a concurrent run, or a file left behind): refused, so that only a clean export is ever printed.
"""

import struct
import sys

path = sys.argv[1]
with open(path, "rb") as f:
    data = bytearray(f.read())
if data[:2] != b"\x05\x02":
    sys.exit("%s: not a version 0x0502 keytab" % path)
pos, entries, seen = 2, 0, set()
while pos < len(data):
    if pos + 4 > len(data):
        sys.exit("%s: truncated record at byte %d" % (path, pos))
    (size,) = struct.unpack_from(">i", data, pos)
    pos += 4
    if size < 0:
        pos += -size
        continue
    end = pos + size
    if size == 0 or end > len(data):
        sys.exit("%s: bad record size %d at byte %d" % (path, size, pos - 4))
    p = pos
    (components,) = struct.unpack_from(">H", data, p)
    p += 2
    for _ in range(components + 1):  # the realm, then each component
        (length,) = struct.unpack_from(">H", data, p)
        p += 2 + length
    p += 4  # name_type
    if p + 9 > end:  # timestamp, 8-bit kvno, enctype, key length
        sys.exit("%s: entry at byte %d is too short" % (path, pos - 4))
    name = bytes(data[pos:p])
    data[p:p + 4] = b"\0\0\0\0"
    (kvno,) = struct.unpack_from(">B", data, p + 4)
    (enctype,) = struct.unpack_from(">H", data, p + 5)
    (key_length,) = struct.unpack_from(">H", data, p + 7)
    after_key = p + 9 + key_length
    if after_key > end:
        sys.exit("%s: entry at byte %d is too short" % (path, pos - 4))
    if end - after_key >= 4:
        (kvno,) = struct.unpack_from(">I", data, after_key)
    if (name, kvno, enctype) in seen:
        sys.exit("%s: two entries for one principal, key version %d and enctype %d: two exports were "
                 "appended to one file (another run at the same time?)" % (path, kvno, enctype))
    seen.add((name, kvno, enctype))
    entries += 1
    pos = end
if entries == 0:
    sys.exit("%s: no entries" % path)
with open(path, "wb") as f:
    f.write(data)
