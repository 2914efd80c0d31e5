"""Issue 14, "truthful fields": every field says what really happened, on the
real kernel: writev counts over all iovecs, generic `char **` arguments as
string lists, a reason for every null, C1 controls escaped, exact bytes of
every string that is not valid UTF-8."""

import base64
import json
import os
import subprocess

import tracer_ebpf
from conftest import PY


def mine(r, event_type):
    return [e for e in r.events if e.event_type == event_type and e.pid == r.pid]


# --------------------------------------------------------------------------
# writev: count and content over every iovec, cuts counted

WRITEV = """
import os
os.writev(1, [b"ab"] * 17)
os.writev(1, [bytes([65 + i % 26]) * 8 for i in range(1024)])
os.writev(1, [b"", b"x", b""] + [b"yz"] * 20)
"""


def test_writev_count_and_content_cover_every_iovec():
    r = tracer_ebpf.trace([PY, "-c", WRITEV], "syscalls/sys_enter_writev", stdout=subprocess.DEVNULL)
    assert r.returncode == 0
    evs = mine(r, "syscalls/sys_enter_writev")
    assert [e.payload["iovcnt"] for e in evs] == [17, 1024, 23]
    assert [e.payload["count"] for e in evs] == [34, 8192, 41]
    assert evs[0].payload["content"] == b"ab" * 17
    # All 1024 iovecs (IOV_MAX), in order.
    assert evs[1].payload["content"] == b"".join(bytes([65 + i % 26]) * 8 for i in range(1024))
    assert evs[2].payload["content"] == b"x" + b"yz" * 20
    for e in evs:
        assert e.payload_info["content"] == {"truncated": False, "lost": None, "captured": True,
                                             "size": e.payload["count"], "len": e.payload["count"]}
        assert "content_truncated" not in e.to_json()
    assert r.stats["truncated"] == 0 and r.stats["fault"] == 0


WRITEV_LARGE = """
import os
# 1024 iovecs of 1,500 bytes (1.46 MiB, more than content_max's 1 MiB), each
# iovec its own byte, then 3 of 100,000 bytes (pieces split inside iovecs).
os.writev(1, [bytes([i % 251]) * 1500 for i in range(1024)])
os.writev(1, [b"p" * 100000, b"q" * 100000, b"r" * 100000])
"""


def test_writev_content_over_many_iovecs_and_pieces_is_whole_up_to_content_max():
    r = tracer_ebpf.trace([PY, "-c", WRITEV_LARGE], "syscalls/sys_enter_writev", stdout=subprocess.DEVNULL)
    assert r.returncode == 0
    evs = mine(r, "syscalls/sys_enter_writev")
    assert [e.payload["count"] for e in evs] == [1024 * 1500, 300000]
    whole = b"".join(bytes([i % 251]) * 1500 for i in range(1024))
    assert evs[0].payload["content"] == whole[: 1 << 20]
    assert evs[0].payload_info["content"]["truncated"] is True
    assert evs[0].payload_info["content"]["size"] == 1024 * 1500
    assert evs[1].payload["content"] == b"p" * 100000 + b"q" * 100000 + b"r" * 100000
    assert r.stats["truncated"] == 1 and r.stats["fault"] == 0 and r.stats["payload_full"] == 0


def test_writev_cut_at_content_max_has_its_size_and_is_counted():
    r = tracer_ebpf.trace([PY, "-c", WRITEV], "syscalls/sys_enter_writev", content_max=10, stdout=subprocess.DEVNULL)
    evs = mine(r, "syscalls/sys_enter_writev")
    assert [e.payload["count"] for e in evs] == [34, 8192, 41]
    assert [e.payload["content"] for e in evs] == [b"ab" * 5, b"A" * 8 + b"BB", b"x" + b"yz" * 4 + b"y"]
    for e, size in zip(evs, [34, 8192, 41]):
        d = json.loads(e.to_json())["payload"]
        assert d["content_truncated"] is True and d["content_size"] == size
    assert r.stats["truncated"] == 3


# --------------------------------------------------------------------------
# Generic tracepoints: `const char *const *` arguments are string lists

EXECVE = """
import os
os.execve("/bin/true", [b"true", b"a b", b"", b"x\\xffy"] + [b"n%d" % i for i in range({extra})], {{b"K": b"v", b"E": b"{big}"}})
"""


def exec_event(extra=0, big=0):
    code = EXECVE.format(extra=extra, big="e" * big)
    r = tracer_ebpf.trace([PY, "-c", code], "syscalls/sys_enter_execve")
    assert r.returncode == 0
    evs = [e for e in mine(r, "syscalls/sys_enter_execve") if e.payload["filename"] == "/bin/true"]
    assert len(evs) == 1, [e.to_json() for e in r.events]
    return evs[0]


def test_generic_execve_argv_and_envp_are_lists_of_strings():
    e = exec_event()
    assert e.payload["argv"] == ["true", "a b", "", "x\ufffdy"]
    assert sorted(e.payload["envp"]) == ["E=", "K=v"]
    assert e.payload_raw["argv"] == [b"true", b"a b", b"", b"x\xffy"]
    assert e.payload_info["argv"]["truncated"] is False and e.payload_info["envp"]["lost"] is None
    d = json.loads(e.to_json())["payload"]
    assert d["argv"] == ["true", "a b", "", "x\ufffdy"]
    assert [base64.b64decode(x) for x in d["argv_base64"]] == [b"true", b"a b", b"", b"x\xffy"]
    assert "argv_truncated" not in d and "envp_base64" not in d


def test_generic_string_lists_stop_at_their_limits_and_say_so():
    # More entries than TB_GENERIC_MAX_LIST_STRS (128): the first 128, cut.
    e = exec_event(extra=200)
    argv = e.payload["argv"]
    assert len(argv) == 128 and argv[:4] == ["true", "a b", "", "x\ufffdy"] and argv[-1] == "n123"
    assert e.payload_info["argv"]["truncated"] is True
    assert json.loads(e.to_json())["payload"]["argv_truncated"] is True
    # More bytes than TB_GENERIC_LIST_BYTES (4096): whole strings first, the
    # one crossing the limit cut there.
    e = exec_event(big=5000)
    assert e.payload["envp"] == ["K=v", "E=" + "e" * (4096 - len("K=v\0E="))]
    assert e.payload_info["envp"]["truncated"] is True and e.payload["argv"] == ["true", "a b", "", "x\ufffdy"]


# --------------------------------------------------------------------------
# A reason for every null

NOT_SELECTED = """
import os
fd = os.open("/dev/null", os.O_WRONLY)
os.dup2(fd, 9)
os.write(9, b"not a content fd")
os.write(1, b"selected")
"""


def test_content_of_an_fd_not_selected_says_so():
    r = tracer_ebpf.trace([PY, "-c", NOT_SELECTED], "syscalls/sys_enter_write", stdout=subprocess.DEVNULL)
    evs = mine(r, "syscalls/sys_enter_write")
    assert [e.payload["fd"] for e in evs] == [9, 1]
    skipped, kept = evs
    assert skipped.payload["content"] is None and skipped.payload["count"] == 16
    assert skipped.payload_info["content"]["lost"] == "not_selected"
    assert not skipped.payload_lost  # nothing was lost: it was not asked for
    d = json.loads(skipped.to_json())["payload"]
    assert d == {"fd": 9, "count": 16, "content": None, "content_lost": "not_selected"}
    assert kept.payload_info["content"]["lost"] is None


# The bytes written live in a private file mapping whose page is not present
# (never touched, and MADV_DONTNEED to be sure): BPF cannot fault it in.
FAULT = """
import mmap, os, sys
path = sys.argv[1]
with open(path, "wb") as f:
    f.write(b"F" * 8192)
fd = os.open(path, os.O_RDONLY)
m = mmap.mmap(fd, 8192, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
m.madvise(mmap.MADV_DONTNEED)
os.write(1, memoryview(m)[:100])
os.write(1, memoryview(m)[4096:4096 + 40])
"""


def test_content_in_a_page_not_present_is_lost_as_fault(tmp_path):
    r = tracer_ebpf.trace([PY, "-c", FAULT, str(tmp_path / "f")], "syscalls/sys_enter_write", stdout=subprocess.DEVNULL)
    evs = [e for e in mine(r, "syscalls/sys_enter_write") if e.payload["fd"] == 1]
    assert [e.payload["count"] for e in evs] == [100, 40]
    for e in evs:  # through the payload area and inline
        assert e.payload_info["content"]["lost"] == "fault" and e.payload_lost
        assert json.loads(e.to_json())["payload"]["content_lost"] == "fault"
    assert r.stats["fault"] == 2


# --------------------------------------------------------------------------
# C1 controls escaped; exact bytes of strings that are not valid UTF-8

C1 = """
import ctypes, os
ctypes.CDLL(None).prctl(15, b"tb\\xc2\\x9b1m\\x7f\\xc2\\x85", 0, 0, 0)
os.write(1, b"csi \\xc2\\x9b31m red \\xc2\\x80\\xc2\\x9f\\xc2\\xa0 del \\x7f")
"""


def test_c1_controls_and_del_are_escaped_in_json():
    r = tracer_ebpf.trace([PY, "-c", C1], "syscalls/sys_enter_write", stdout=subprocess.DEVNULL)
    e = mine(r, "syscalls/sys_enter_write")[-1]
    line = e.to_json()
    assert all(chr(c) not in line for c in list(range(0x80, 0xA0)) + [0x7F]), ascii(line)
    assert '"comm":"tb\\u009b1m\\u007f\\u0085"' in line
    assert '"content":"csi \\u009b31m red \\u0080\\u009f\u00a0 del \\u007f"' in line
    d = json.loads(line)
    assert d["payload"]["content"].encode() == b"csi \xc2\x9b31m red \xc2\x80\xc2\x9f\xc2\xa0 del \x7f"
    assert "content_base64" not in d["payload"] and "comm_base64" not in d  # valid UTF-8


INVALID = """
import ctypes, os
ctypes.CDLL(None).prctl(15, b"tb\\xff\\xfeQ", 0, 0, 0)
try:
    os.open(b"/nonexistent/\\xff\\x01dir", os.O_RDONLY)
except OSError:
    pass
os.execv(b"/bin/true", [b"true", b"\\xff\\xfe", b"ok"])
"""


def test_strings_that_are_not_utf8_carry_their_exact_bytes():
    r = tracer_ebpf.trace([PY, "-c", INVALID], ["syscalls/sys_enter_openat", "sched/sched_process_exec"])
    opens = [e for e in mine(r, "syscalls/sys_enter_openat") if e.payload["filename"].startswith("/nonexistent/")]
    assert len(opens) == 1
    d = json.loads(opens[0].to_json())
    assert base64.b64decode(d["comm_base64"]) == b"tb\xff\xfeQ"
    assert d["comm"] == "tb\ufffd\ufffdQ"
    assert base64.b64decode(d["payload"]["filename_base64"]) == b"/nonexistent/\xff\x01dir"
    assert opens[0].comm_bytes == b"tb\xff\xfeQ"
    assert opens[0].payload_raw["filename"] == b"/nonexistent/\xff\x01dir"
    execs = [e for e in mine(r, "sched/sched_process_exec") if e.payload["filename"] == "/bin/true"]
    assert len(execs) == 1
    d = json.loads(execs[0].to_json())
    assert d["payload"]["argv"] == ["true", "\ufffd\ufffd", "ok"]
    assert [base64.b64decode(x) for x in d["payload"]["argv_base64"]] == [b"true", b"\xff\xfe", b"ok"]
    assert execs[0].payload_raw["argv"] == [b"true", b"\xff\xfe", b"ok"]
    assert "filename_base64" not in d["payload"] and "comm_base64" not in d  # exec renamed it: valid
