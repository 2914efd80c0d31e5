#!/usr/bin/env bash
# Kernel matrix (issue 8): the same compiled tracer (one binary, one embedded
# BPF object, no rebuild) must load and pass tests/kernels/check.sh on the host
# kernel and, booted with virtme-ng under QEMU (software emulation), on Debian's
# 6.1 kernel and its PREEMPT_RT variant.
#
# usage: tests/kernels/run.sh [--no-install] [host] [6.1] [6.1-rt]
#   (no kernel names: all three)
#
# Run as root. Installs what it needs, idempotently: apt qemu-system-x86,
# busybox-static (virtme-ng builds its guest initramfs with it) and the newest
# linux-image-6.1.0-*-{amd64,rt-amd64}-unsigned (no initramfs is generated for
# them: INITRD=No); pip virtme-ng into a venv. Builds target/release/example if
# it is missing, then snapshots it so every kernel runs the very same bytes.
#
# Environment:
#   TBK_EXAMPLE=path    test this binary instead of target/release/example
#   TBK_BUILD=1         run `cargo build --release --bin example` even if present
#   TBK_VM_TIMEOUT=s    per-VM limit, boot included (default 600)
#   TBK_HOST_TIMEOUT=s  host check limit (default 300)
#   TBK_WORK=dir        logs and the binary snapshot (default /tmp/tbk-kernels)
#   TBK_VENV=dir        virtme-ng venv (default /tmp/tbk-vng-venv)
#   TBK_VNG=spec        pip requirement for virtme-ng (default virtme-ng==1.42)
#   TBK_KVER_61, TBK_KVER_61RT  kernel versions (default: newest installed,
#                       else newest in apt), e.g. 6.1.0-56-amd64
#
# Prints a summary table and `kernels: N passed, N failed`; exits 1 on any
# failure, 2 on a setup error.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=${TBK_WORK:-/tmp/tbk-kernels}
VENV=${TBK_VENV:-/tmp/tbk-vng-venv}
VNG_SPEC=${TBK_VNG:-virtme-ng==1.42}
VM_TIMEOUT=${TBK_VM_TIMEOUT:-600}
HOST_TIMEOUT=${TBK_HOST_TIMEOUT:-300}
# Modules that udev would load in the guest for QEMU's emulated q35 devices
# (KVM, CD-ROM, watchdogs, AHCI, crypto accelerators, ...): none is needed,
# and under software emulation loading them costs 20-40 s per boot.
MODULE_BLACKLIST=kvm_amd,kvm_intel,kvm,irqbypass,ccp,sr_mod,cdrom,iTCO_wdt,intel_pmc_bxt,iTCO_vendor_support
MODULE_BLACKLIST=$MODULE_BLACKLIST,i6300esb,watchdog,psmouse,serio_raw,ahci,libahci,libata,scsi_mod,i2c_i801
MODULE_BLACKLIST=$MODULE_BLACKLIST,i2c_smbus,lpc_ich,pcspkr,evdev,crct10dif_pclmul,crc32_pclmul,crc32c_intel
MODULE_BLACKLIST=$MODULE_BLACKLIST,ghash_clmulni_intel,sha512_ssse3,sha512_generic,sha256_ssse3,sha1_ssse3
MODULE_BLACKLIST=$MODULE_BLACKLIST,aesni_intel,crypto_simd,cryptd,sg,qemu_fw_cfg,button

INSTALL=1
KERNELS=()
for a in "$@"; do
	case $a in
	--no-install) INSTALL= ;;
	host | 6.1 | 6.1-rt) KERNELS+=("$a") ;;
	-h | --help)
		sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "run.sh: unknown argument $a (see --help)" >&2
		exit 2
		;;
	esac
done
[ ${#KERNELS[@]} -gt 0 ] || KERNELS=(host 6.1 6.1-rt)

say() { echo "[kernels $(date +%T)] $*"; }
die() {
	say "setup error: $*"
	exit 2
}
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", b - a }'; }

[ "$(id -u)" = 0 ] || die "run as root (BPF, and apt for the setup)"
mkdir -p "$WORK" || die "cannot create $WORK"
needs_vm=
for k in "${KERNELS[@]}"; do [ "$k" != host ] && needs_vm=1; done

# ---- setup ------------------------------------------------------------------

# Newest 6.1 kernel of a flavour ("amd64" or "rt-amd64"): installed, else apt's.
kver_installed() {
	local flavour=$1 v
	for v in $(ls /boot/vmlinuz-6.1.0-*-"$flavour" 2>/dev/null | sed 's|^/boot/vmlinuz-||' | sort -V -r); do
		[[ $v =~ ^6\.1\.0-[0-9]+-$flavour$ ]] || continue # not -cloud-amd64 for amd64
		[ -e "/lib/modules/$v/modules.dep" ] && { echo "$v"; return; }
	done
}
kver_apt() {
	apt-cache search --names-only "^linux-image-6\.1\.0-[0-9]+-$1-unsigned\$" 2>/dev/null |
		sed -n "s/^linux-image-\(6\.1\.0-[0-9]*-$1\)-unsigned .*/\1/p" | sort -V | tail -n 1
}
apt_updated=
apt_update() {
	[ -n "$apt_updated" ] && return
	say "apt-get update"
	timeout 600 apt-get update -q >"$WORK/apt-update.log" 2>&1 || die "apt-get update failed (see $WORK/apt-update.log)"
	apt_updated=1
}

if [ -n "$needs_vm" ]; then
	KVER_61=${TBK_KVER_61:-$(kver_installed amd64)}
	KVER_61RT=${TBK_KVER_61RT:-$(kver_installed rt-amd64)}
	if [ -n "$INSTALL" ]; then
		pkgs=()
		command -v qemu-system-x86_64 >/dev/null || pkgs+=(qemu-system-x86)
		command -v busybox >/dev/null || pkgs+=(busybox-static)
		if [ -z "$KVER_61" ] || [ -z "$KVER_61RT" ]; then
			[ -n "$(kver_apt amd64)" ] || apt_update
			[ -n "$KVER_61" ] || { KVER_61=$(kver_apt amd64); pkgs+=("linux-image-$KVER_61-unsigned"); }
			[ -n "$KVER_61RT" ] || { KVER_61RT=$(kver_apt rt-amd64); pkgs+=("linux-image-$KVER_61RT-unsigned"); }
			[ -n "$KVER_61" ] && [ -n "$KVER_61RT" ] || die "no linux-image-6.1.0-*-amd64-unsigned in apt"
		fi
		for v in "$KVER_61" "$KVER_61RT"; do
			[ -e "/boot/vmlinuz-$v" ] || [[ " ${pkgs[*]-} " == *" linux-image-$v-unsigned "* ]] || pkgs+=("linux-image-$v-unsigned")
		done
		if [ ${#pkgs[@]} -gt 0 ]; then
			apt_update
			say "apt-get install ${pkgs[*]}"
			t=$(now)
			# INITRD=No: the kernel's postinst hook skips update-initramfs
			# (virtme-ng builds its own); saves minutes.
			DEBIAN_FRONTEND=noninteractive INITRD=No timeout 1800 \
				apt-get install -y -q --no-install-recommends "${pkgs[@]}" >"$WORK/apt-install.log" 2>&1 ||
				die "apt-get install failed (see $WORK/apt-install.log)"
			say "installed in $(secs "$t" "$(now)") s"
		fi
		if ! command -v vng >/dev/null && [ ! -x "$VENV/bin/vng" ]; then
			say "pip install $VNG_SPEC into $VENV"
			{ timeout 300 python3 -m venv "$VENV" && timeout 600 "$VENV/bin/pip" install -q --disable-pip-version-check "$VNG_SPEC"; } \
				>"$WORK/pip.log" 2>&1 || die "installing virtme-ng failed (see $WORK/pip.log)"
		fi
	fi
	[ -x "$VENV/bin/vng" ] && export PATH="$VENV/bin:$PATH" # vng runs virtme-run from PATH
	command -v vng >/dev/null || die "vng not found (run without --no-install)"
	command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found"
	command -v busybox >/dev/null || die "busybox not found (virtme-ng needs it for the guest initramfs)"
	for v in "$KVER_61" "$KVER_61RT"; do
		[ -n "$v" ] && [ -e "/boot/vmlinuz-$v" ] && [ -e "/lib/modules/$v/modules.dep" ] ||
			die "kernel ${v:-6.1} is not installed (/boot/vmlinuz-$v, /lib/modules/$v)"
	done
	say "vng $(vng --version 2>/dev/null | awk '{print $NF}'), $(qemu-system-x86_64 --version | head -n 1)"
fi

# The binary under test: built once if missing, then snapshotted.
if [ -n "${TBK_EXAMPLE:-}" ]; then
	SRC=$TBK_EXAMPLE
else
	SRC=$ROOT/target/release/example
	if [ ! -x "$SRC" ] || [ -n "${TBK_BUILD:-}" ]; then
		say "cargo build --release --bin example"
		(cd "$ROOT" && timeout 1800 cargo build --release --bin example) >"$WORK/build.log" 2>&1 ||
			die "build failed (see $WORK/build.log)"
	fi
fi
[ -x "$SRC" ] || die "no binary at $SRC"
EX=$WORK/example
cp "$SRC" "$EX.tmp" && mv "$EX.tmp" "$EX" || die "cannot copy $SRC"
SHA=$(sha256sum "$EX" | cut -c1-16)
say "binary under test: $SRC (snapshot $EX, sha256 $SHA)"

# ---- the matrix ---------------------------------------------------------------

# Runs a command in its own session with a time limit; on expiry the whole
# process group (vng, virtme-run, qemu) is terminated, then killed.
run_limited() { # limit log cmd...
	local limit=$1 log=$2 pid t0 rc
	shift 2
	t0=$(date +%s)
	setsid "$@" </dev/null >"$log" 2>&1 &
	pid=$!
	while kill -0 "$pid" 2>/dev/null; do
		if (($(date +%s) - t0 >= limit)); then
			kill -TERM -- "-$pid" 2>/dev/null
			sleep 10
			kill -KILL -- "-$pid" 2>/dev/null
			wait "$pid" 2>/dev/null
			return 124
		fi
		sleep 1
	done
	wait "$pid"
	rc=$?
	return $rc
}

declare -A RES REASON REL TOTAL CHECK
for k in "${KERNELS[@]}"; do
	log=$WORK/$k.log
	t=$(now)
	case $k in
	host)
		want=$(uname -r)
		limit=$HOST_TIMEOUT
		say "host ($want): check.sh"
		run_limited "$limit" "$log" bash "$HERE/check.sh" "$EX"
		;;
	*)
		[ "$k" = 6.1 ] && want=$KVER_61 || want=$KVER_61RT
		limit=$VM_TIMEOUT
		say "$k ($want): booting with vng (software emulation) and running check.sh"
		run_limited "$limit" "$log" vng --disable-kvm --force-9p -r "/boot/vmlinuz-$want" --user root \
			--cpus 2 --memory 1G -a "module_blacklist=$MODULE_BLACKLIST" -- "bash $HERE/check.sh $EX"
		;;
	esac
	rc=$?
	end=$(now)
	TOTAL[$k]=$(secs "$t" "$end")
	line=$(grep -a -m1 '^TBK-RESULT ' "$log" | tr -d '\r')
	REL[$k]=$want
	CHECK[$k]=$(sed -n 's/.*(check took \([0-9.]*\)s)$/\1/p' <<<"$line")
	if [ -z "$line" ]; then
		RES[$k]=FAIL
		if [ $rc = 124 ]; then
			REASON[$k]="timed out after ${limit}s"
		else
			REASON[$k]="no result from check.sh (exit $rc): $(grep -a -v '^\s*$' "$log" | tail -n 1 | cut -c1-200)"
		fi
	else
		read -r _ r got reason <<<"$line"
		RES[$k]=$r
		REASON[$k]=${reason% (check took*}
		if [ "$got" != "$want" ]; then
			RES[$k]=FAIL
			REASON[$k]="ran on $got, expected $want; ${REASON[$k]}"
		fi
	fi
	say "$k: ${RES[$k]} in ${TOTAL[$k]} s: ${REASON[$k]}"
	if [ "${RES[$k]}" != PASS ]; then
		echo "---- $log (last 60 lines)"
		grep -a -v '^\s*$' "$log" | tail -n 60 | cut -c1-400 | sed 's/^/    /'
		echo "----"
	fi
done

echo
echo "Kernel matrix, binary sha256 $SHA (logs in $WORK)"
printf '%-7s %-22s %-5s %7s %7s %7s  %s\n' kernel release result total boot+vm check reason
pass=0 fail=0
for k in "${KERNELS[@]}"; do
	c=${CHECK[$k]:-}
	if [ -n "$c" ]; then
		b=$(awk -v t="${TOTAL[$k]}" -v c="$c" 'BEGIN { printf "%.0f", t - c }')
		c=$(printf '%.0f' "$c")
	else
		b=- c=-
	fi
	[ "$k" = host ] && b=-
	printf '%-7s %-22s %-5s %6ss %6s%s %6s%s  %s\n' "$k" "${REL[$k]}" "${RES[$k]}" "${TOTAL[$k]}" \
		"$b" "$([ "$b" = - ] && echo ' ' || echo s)" "$c" "$([ "$c" = - ] && echo ' ' || echo s)" "${REASON[$k]}"
	if [ "${RES[$k]}" = PASS ]; then pass=$((pass + 1)); else fail=$((fail + 1)); fi
done
echo "kernels: $pass passed, $fail failed"
[ $fail = 0 ]
