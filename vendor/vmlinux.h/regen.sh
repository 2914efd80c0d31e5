#!/usr/bin/env bash
# Regenerate vmlinux.h from the running kernel's BTF.
# The BPF program only uses CO-RE reads (BPF_CORE_READ / relocatable field
# accesses), so the compiled object is not tied to the kernel this header was
# dumped from: libbpf relocates every field access against the target kernel's
# own BTF at load time.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
btf=${1:-/sys/kernel/btf/vmlinux}
command -v bpftool >/dev/null || { echo "regen.sh: bpftool not found (apt-get install bpftool)" >&2; exit 1; }
tmp=$(mktemp)
bpftool btf dump file "$btf" format c > "$tmp"
chmod 644 "$tmp"
mv "$tmp" "$here/include/x86/vmlinux.h"
echo "wrote $here/include/x86/vmlinux.h from $btf ($(uname -r))"
