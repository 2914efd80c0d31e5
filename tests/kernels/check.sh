#!/usr/bin/env bash
# End-to-end capture check of the already-built tracer on the *running* kernel.
# Runs as root, either directly on the host or inside a virtme-ng guest that
# shares the host's filesystem (tests/kernels/run.sh boots it). Never rebuilds.
#
# usage: tests/kernels/check.sh [path/to/example]
#
# Loads every typed program (all typed events at once), plus the generic
# handler on two tracepoints (sched/sched_process_fork: kernel-side fields whose
# layout differs between kernels; syscalls/sys_enter_unlinkat: a user string
# pointer), with a comm filter, and runs a workload of binaries whose comm has
# that prefix. Then checks byte-exact write content (a UTF-8 string and raw
# non-UTF-8 bytes), the exec filename, argv, cwd, uid and gid, the openat filename and its
# ENOENT exit, and both generic events. A second, load-only run adds the
# follow-mode program (tb_follow_fork) so that every program in the object has
# gone through the verifier.
#
# The last line is always `TBK-RESULT PASS|FAIL <kernel> <reason>`; exit 0 on
# PASS, 1 on FAIL.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
EX=${1:-$ROOT/target/release/example}
KREL=$(uname -r)
T0=$(date +%s.%N)
# Slack for software-emulated guests (TCG), where loading takes tens of seconds.
STARTUP_TIMEOUT=${TBK_STARTUP_TIMEOUT:-180}

W=
TRACER_PID=
CG2_MOUNTED=
cleanup() {
	[ -n "$TRACER_PID" ] && kill -INT "$TRACER_PID" 2>/dev/null
	[ -n "$CG2_MOUNTED" ] && umount "$CG2_MOUNTED" 2>/dev/null
	[ -n "$W" ] && [ -z "${TBK_KEEP:-}" ] && rm -rf "$W"
}
trap cleanup EXIT

elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1fs", b - a }'; }
result() { # PASS|FAIL reason...
	local r=$1
	shift
	echo "TBK-RESULT $r $KREL $* (check took $(elapsed))"
	[ "$r" = PASS ] && exit 0
	exit 1
}
show() { # label file: the file's tail, indented, for the log
	echo "--- $1 ($2, last 60 lines)"
	tail -n 60 "$2" 2>/dev/null | sed 's/^/    /'
}

echo "== check.sh on $KREL ($(uname -v))"
[ "$(id -u)" = 0 ] || result FAIL "not root"
[ -x "$EX" ] || result FAIL "no tracer binary at $EX (build it on the host first)"
echo "binary: $EX sha256=$(sha256sum "$EX" | cut -c1-16)"
[ -r /sys/kernel/btf/vmlinux ] || result FAIL "no /sys/kernel/btf/vmlinux (kernel without CONFIG_DEBUG_INFO_BTF)"

# Mounts that a minimal guest may lack. debugfs is not needed.
if [ ! -e /sys/kernel/tracing/available_events ]; then
	mount -t tracefs nodev /sys/kernel/tracing || result FAIL "cannot mount tracefs at /sys/kernel/tracing"
fi
if ! grep -qs ' /sys/fs/bpf bpf ' /proc/mounts; then
	mount -t bpf bpf /sys/fs/bpf 2>/dev/null || echo "note: /sys/fs/bpf not mounted (optional)"
fi
ulimit -l unlimited 2>/dev/null || true # only matters before 5.11 (memlock accounting)

W=$(mktemp -d /tmp/tbk-check.XXXXXX) || result FAIL "mktemp failed"
NONCE=$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
for b in echo cat rm printf; do
	cp "$(type -P "$b")" "$W/tbk-$b" || result FAIL "cannot copy $b"
done
# This shell copy runs the workload, so its forks carry a tbk- comm too.
cp "$(readlink -f /bin/sh)" "$W/tbk-sh" || result FAIL "cannot copy /bin/sh"

# The capture run also filters on the cgroup2 root (every task is below it),
# so the kernel runs the cgroup filter (bpf_current_task_under_cgroup) on
# every event. A guest without a cgroup2 mount gets one for the run.
CG2=$(awk '{ for (i = 7; i < NF; i++) if ($i == "-") { if ($(i + 1) == "cgroup2") { print $5; exit } break } }' /proc/self/mountinfo)
if [ -z "$CG2" ]; then
	mkdir -p "$W/cgroup2" && mount -t cgroup2 none "$W/cgroup2" && CG2=$W/cgroup2 && CG2_MOUNTED=$CG2
fi
[ -n "$CG2" ] || result FAIL "no cgroup2 mount and none could be made"
: >"$W/victim-$NONCE"

TYPED=syscalls/sys_enter_write,syscalls/sys_enter_openat,syscalls/sys_exit_openat,syscalls/sys_enter_read
TYPED=$TYPED,syscalls/sys_enter_writev,syscalls/sys_enter_pwrite64,sched/sched_process_exec,sched/sched_process_exit
TYPED=$TYPED,vmscan/mm_vmscan_direct_reclaim_begin,oom/mark_victim
# TBK_GENERIC= (empty) leaves the generic handler out, to tell typed from generic failures.
# syscalls/sys_exit_* makes the syscall events many enough for the shared
# programs on the raw sys_enter/sys_exit tracepoints (c/bpf/syscalls.h).
GENERIC=${TBK_GENERIC-sched/sched_process_fork,syscalls/sys_enter_unlinkat,syscalls/sys_exit_*}
EVENTS=$TYPED${GENERIC:+,$GENERIC}

# The key line of a failed load/attach (run with TRACER_EBPF_DEBUG=1): the
# verifier's complaint (the line before "processed N insns"), else libbpf's
# attach error, else the tracer's own message.
key_line() {
	local f=$1 v
	v=$(grep -B1 -m1 '^processed [0-9]* insns' "$f" | head -n 1)
	[ -n "$v" ] && { echo "verifier: $v"; return; }
	v=$(grep -m1 -E 'failed to create BPF link|failed to attach|failed to load' "$f" |
		sed -e 's/^\(libbpf: \)*//' -e "s/^prog '\([^']*\)': failed to create BPF link for perf_event FD [0-9]*: /attach \1 (perf link): /")
	[ -n "$v" ] && { echo "$v"; return; }
	grep -m1 'example:' "$f" | sed 's/^example: //'
}
# After a failed load: which programs fail, one event at a time (the generic
# events share one program, handle__generic, so they go together).
diagnose() {
	local e out=() i=0
	echo "== diagnosis: loading each event on its own (TRACER_EBPF_DEBUG=1)"
	for e in ${TYPED//,/ } "$GENERIC" "sched/sched_process_exit --follow --pid $$"; do
		[ -n "$e" ] || continue
		i=$((i + 1))
		# shellcheck disable=SC2086 # $e may carry --follow --pid
		TRACER_EBPF_DEBUG=1 timeout -k 5 "$STARTUP_TIMEOUT" "$EX" --events $e --duration 0 >/dev/null 2>"$W/diag$i.err"
		if [ $? = 0 ] && ! grep -q 'not attached' "$W/diag$i.err"; then
			echo "  ok   $e"
		else
			echo "  FAIL $e: $(key_line "$W/diag$i.err" | cut -c1-300)"
			out+=("${e%% *}: $(key_line "$W/diag$i.err" | cut -c1-160)")
		fi
	done
	printf '%s; ' "${out[@]}" | sed 's/; $/\n/'

}

# 1. Load-only run with follow mode and the process snapshot: every program
# of the object is verified (the snapshot's task iterator too), and this
# shell gets its proc/snapshot event.
echo "== load-only run ($EVENTS, --follow, --snapshot)"
t=$(date +%s.%N)
timeout -k 5 "$STARTUP_TIMEOUT" "$EX" --events "$EVENTS" --follow --snapshot --pid $$ --duration 0 \
	>"$W/load.out" 2>"$W/load.err"
rc=$?
cat "$W/load.err"
if [ $rc != 0 ] || grep -q 'not attached' "$W/load.err"; then
	show "load-only stderr" "$W/load.err"
	diagnose >"$W/diag.txt"
	sed '$d' "$W/diag.txt"
	result FAIL "load failed: $(tail -n 1 "$W/diag.txt")"
fi
grep -q "\"event_type\":\"proc/snapshot\".*\"pid\":$$,\"tid\":$$," "$W/load.out" ||
	result FAIL "no proc/snapshot event of pid $$: $(head -c 300 "$W/load.out")"
echo "load-only run ok in $(awk -v a="$t" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1fs", b - a }')"

# 2. Capture run.
echo "== capture run"
t=$(date +%s.%N)
"$EX" --events "$EVENTS" --comm tbk- --cgroup "$CG2" --duration "$((STARTUP_TIMEOUT + 120))" \
	>"$W/out.jsonl" 2>"$W/err.txt" &
TRACER_PID=$!
ready=
for _ in $(seq $((STARTUP_TIMEOUT * 5))); do
	grep -q 'example: tracing' "$W/err.txt" && { ready=1; break; }
	kill -0 "$TRACER_PID" 2>/dev/null || break
	sleep 0.2
done
if [ -z "$ready" ]; then
	show "tracer stderr" "$W/err.txt"
	result FAIL "tracer did not start: $(grep -m1 'example:' "$W/err.txt" | cut -c1-300)"
fi
cat "$W/err.txt"
grep -q 'not attached' "$W/err.txt" && result FAIL "$(grep -m1 'not attached' "$W/err.txt")"
# Every typed event is on a raw tracepoint: the syscall ones on the shared
# sys_enter/sys_exit programs (a kernel that refused those would get one
# perf event per syscall event instead, silently), the others each on its own.
for tp in sys_enter sys_exit sched_process_exec sched_process_exit mm_vmscan_direct_reclaim_begin mark_victim; do
	grep -qs "^tp_name:[[:space:]]*$tp\$" /proc/"$TRACER_PID"/fdinfo/* ||
		result FAIL "no raw tracepoint link on $tp"
done
echo "tracer ready after $(awk -v a="$t" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1fs", b - a }')"

# The workload. Its own shell's pid is recorded so forks can be matched.
PAYLOAD="payload-$NONCE ü	tab \"q\" \\"
MISSING="/nonexistent-tbk-$NONCE"
timeout -k 5 60 "$W/tbk-sh" -c '
	cd "$1" || exit 1
	echo $$ >"$1/sh.pid"
	"$1/tbk-echo" "$2"
	"$1/tbk-printf" "raw-%s-\377\000\001-end\n" "$3"
	"$1/tbk-cat" "$4" 2>/dev/null
	"$1/tbk-rm" "$1/victim-$3"
	exit 0
' tbk-sh "$W" "$PAYLOAD" "$NONCE" "$MISSING" >"$W/workload.out"
echo "workload exited $?"

# Stop once the workload's last event is in (or after 30 s), then drain.
for _ in $(seq 150); do
	grep -q "victim-$NONCE" "$W/out.jsonl" && break
	sleep 0.2
done
sleep 0.5
kill -INT "$TRACER_PID"
for _ in $(seq 150); do
	kill -0 "$TRACER_PID" 2>/dev/null || break
	sleep 0.2
done
kill -0 "$TRACER_PID" 2>/dev/null && { kill -KILL "$TRACER_PID"; result FAIL "tracer did not stop on SIGINT"; }
wait "$TRACER_PID"
rc=$?
TRACER_PID=
grep 'example: stats' "$W/err.txt"
[ $rc = 0 ] || { show "tracer stderr" "$W/err.txt"; result FAIL "tracer exited $rc"; }
echo "captured $(wc -l <"$W/out.jsonl") events"

# 3. Verify.
python3 - "$W" "$PAYLOAD" "$NONCE" "$MISSING" "$GENERIC" >"$W/verify.txt" 2>&1 <<'PY'
import base64, json, sys

w, payload, nonce, missing, generic = sys.argv[1:6]
generic = generic.split(",")
evs = []
for n, line in enumerate(open(f"{w}/out.jsonl", encoding="utf-8", errors="strict"), 1):
    try:
        evs.append(json.loads(line))
    except ValueError as e:
        print(f"REASON line {n} is not JSON ({e}): {line[:200]!r}")
        sys.exit(1)
sh_pid = int(open(f"{w}/sh.pid").read())
problems = []

def fail(msg):
    problems.append(msg)

def of(kind, **kw):
    return [e for e in evs if e["event_type"] == kind and all(e.get(k) == v for k, v in kw.items())]

bad_comm = [e for e in evs if not e["comm"].startswith("tbk-")]
if bad_comm:
    fail(f"comm filter leaked: {bad_comm[0]['comm']!r} in {bad_comm[0]['event_type']}")

# exec: filename and exact argv
ex = [e for e in of("sched/sched_process_exec", comm="tbk-echo")]
want_argv = [f"{w}/tbk-echo", payload]
if len(ex) != 1:
    fail(f"expected 1 exec of tbk-echo, got {len(ex)}")
else:
    p = ex[0]["payload"]
    if p.get("filename") != f"{w}/tbk-echo":
        fail(f"exec filename {p.get('filename')!r}")
    if p.get("argv") != want_argv or p.get("argc") != 2:
        fail(f"exec argv {p.get('argv')!r} argc {p.get('argc')}")
    # the working directory walked from the task's fs, and the real ids
    import os
    if p.get("cwd") != os.path.realpath(w) or "cwd_truncated" in p:
        fail(f"exec cwd {p.get('cwd')!r} (truncated: {p.get('cwd_truncated')}), expected {os.path.realpath(w)!r}")
    if (p.get("uid"), p.get("gid")) != (os.getuid(), os.getgid()):
        fail(f"exec uid/gid {p.get('uid')}/{p.get('gid')}, expected {os.getuid()}/{os.getgid()}")
    echo_pid = ex[0]["pid"]
    if ex[0]["ppid"] != sh_pid:
        fail(f"exec ppid {ex[0]['ppid']} != workload shell {sh_pid}")

# write content, byte-exact: a UTF-8 string...
wr = [e for e in of("syscalls/sys_enter_write", comm="tbk-echo") if e["payload"].get("fd") == 1]
want = (payload + "\n").encode()
if len(wr) != 1:
    fail(f"expected 1 write by tbk-echo to fd 1, got {len(wr)}")
else:
    p = wr[0]["payload"]
    got = p.get("content")
    got_b = base64.b64decode(p["content_base64"]) if "content_base64" in p else (got or "").encode()
    if got_b != want or p.get("count") != len(want) or "content_base64" in p:
        fail(f"write content {got!r} (count {p.get('count')}) != {want!r}")
    for k in ("content_truncated", "content_lost"):
        if k in p:
            fail(f"write content flagged {k}={p[k]}")

# ... and bytes that are not UTF-8 (content_base64 carries them exactly)
raw = [e for e in of("syscalls/sys_enter_write", comm="tbk-printf") if e["payload"].get("fd") == 1]
want = b"raw-" + nonce.encode() + b"-\xff\x00\x01-end\n"
if len(raw) != 1:
    fail(f"expected 1 write by tbk-printf, got {len(raw)}")
else:
    p = raw[0]["payload"]
    got_b = base64.b64decode(p.get("content_base64", ""))
    if got_b != want or p.get("count") != len(want):
        fail(f"raw write content_base64 {got_b!r} != {want!r}")

# openat of the missing path, and its ENOENT exit on the same thread
op = [e for e in of("syscalls/sys_enter_openat", comm="tbk-cat") if e["payload"].get("filename") == missing]
if len(op) != 1:
    fail(f"expected 1 openat of {missing}, got {len(op)}")
else:
    o = op[0]
    exits = sorted(
        (e for e in of("syscalls/sys_exit_openat", tid=o["tid"]) if e["timestamp_ns"] >= o["timestamp_ns"]),
        key=lambda e: e["timestamp_ns"],
    )
    if not exits:
        fail("no sys_exit_openat after the openat of the missing path")
    elif exits[0]["payload"].get("ret") != -2 or exits[0]["payload"].get("ret_name") != "ENOENT":
        fail(f"openat exit {exits[0]['payload']!r}, expected ret -2 ENOENT")

# generic: sched_process_fork from the workload shell, child = the tbk-echo process
forks = of("sched/sched_process_fork", pid=sh_pid)
if "sched/sched_process_fork" not in generic:
    pass
elif len(forks) < 4:
    fail(f"expected >= 4 forks by the workload shell {sh_pid}, got {len(forks)}")
elif ex:
    f = [e for e in forks if e["payload"].get("child_pid") == echo_pid]
    if len(f) != 1:
        fail(f"no fork with child_pid {echo_pid}: {[e['payload'] for e in forks]!r}")
    else:
        p = f[0]["payload"]
        if (p.get("parent_pid"), p.get("parent_comm"), p.get("child_comm")) != (sh_pid, "tbk-sh", "tbk-sh"):
            fail(f"fork payload {p!r}")

# generic: unlinkat with a user-space string pointer
ul = of("syscalls/sys_enter_unlinkat", comm="tbk-rm")
want_path = f"{w}/victim-{nonce}"
if "syscalls/sys_enter_unlinkat" in generic and not any(e["payload"].get("pathname") == want_path and e["payload"].get("dfd") == -100 for e in ul):
    fail(f"no unlinkat of {want_path}: {[e['payload'] for e in ul]!r}")
# generic through the shared sys_exit program: the kernel's number (263 on
# x86-64) and the return value
if "syscalls/sys_exit_*" in generic:
    ux = [e["payload"] for e in of("syscalls/sys_exit_unlinkat", comm="tbk-rm")]
    if {"__syscall_nr": 263, "ret": 0} not in [{k: p.get(k) for k in ("__syscall_nr", "ret")} for p in ux]:
        fail(f"no exit of unlinkat with __syscall_nr 263 and ret 0: {ux!r}")

# counters that must stay 0 in a run this small (fault may not: a path in a
# page not yet faulted in is a documented, flagged loss)
stats = {}
for line in open(f"{w}/err.txt"):
    if line.startswith("example: stats "):
        stats = dict(kv.split("=", 1) for kv in line.split()[2:])
if not stats:
    fail("no stats line from the tracer")
for k in ("ring_full", "payload_full", "busy", "decode_errors", "overwritten", "seq_gaps"):
    if stats.get(k, "0") != "0":
        fail(f"stats {k}={stats[k]}")

kinds = sorted({e["event_type"] for e in evs})
if problems:
    for p in problems:
        print("problem:", p)
    print("REASON " + "; ".join(problems)[:400])
    sys.exit(1)
print(f"REASON {len(evs)} events ok ({', '.join(k.split('/')[1] for k in kinds)})")
PY
rc=$?
grep -v '^REASON ' "$W/verify.txt"
reason=$(grep -m1 '^REASON ' "$W/verify.txt" | cut -c8-)
[ -n "$reason" ] || reason="verifier script crashed: $(tail -n 1 "$W/verify.txt")"
if [ $rc = 0 ]; then
	result PASS "$reason"
fi
show "captured events" "$W/out.jsonl"
TBK_KEEP=1
echo "kept $W"
result FAIL "$reason"
