#!/usr/bin/env python3
"""How fast this machine writes memory a process touches for the first time,
in 4 KiB pages and in transparent huge pages, right after the same amount
was freed and after a pause.

Why it matters: the reader copies payload bytes into blocks it maps when
its warm pool is used up (rs/byte_blocks.rs). On a virtual machine with free
page reporting (virtio-balloon), free 2 MiB pages go back to the host within
seconds, and a huge page touched again waits for the host to back it.

    python3 bench/fresh_memory.py [--mib 256] [--rounds 3] [--pause 5]
"""
import argparse
import ctypes
import mmap
import time


def write_fresh(nbytes, huge):
    """GB/s of one memset over a fresh anonymous mapping of `nbytes`."""
    m = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if huge:
        m.madvise(mmap.MADV_HUGEPAGE)
    buf = (ctypes.c_char * nbytes).from_buffer(m)
    t = time.perf_counter()
    ctypes.memset(buf, 1, nbytes)
    dt = time.perf_counter() - t
    del buf
    m.close()
    return nbytes / dt / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=256, help="bytes written per round (MiB)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pause", type=float, default=5.0, help="seconds between the freeing and the next round")
    args = ap.parse_args()
    if args.mib <= 0 or args.rounds <= 0 or args.pause < 0:
        ap.error("--mib and --rounds must be positive, --pause not negative")
    nbytes = args.mib << 20
    with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
        print("transparent_hugepage:", f.read().strip())
    print(f"{'pages':<10} {'after':<12} " + " ".join(f"round {i + 1:<3}" for i in range(args.rounds)) + "  (GB/s)")
    for huge in (False, True):
        for pause in (0.1, args.pause):
            speeds = []
            for _ in range(args.rounds):
                time.sleep(pause)
                speeds.append(write_fresh(nbytes, huge))
            label = "huge 2 MiB" if huge else "4 KiB"
            print(f"{label:<10} {f'{pause:g} s pause':<12} " + " ".join(f"{s:9.2f}" for s in speeds))


if __name__ == "__main__":
    main()
