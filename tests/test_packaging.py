"""Issue 5: the wheel runs where the build tools are not, the sdist is
complete, and the typing (stubs, README examples) holds."""

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import PY, ROOT, tool

# What the extension may link from the system: glibc, libgcc and zlib (all in
# every manylinux policy); anything else must be bundled in tracer_ebpf.libs/.
SYSTEM_LIBS = re.compile(r"^(linux-vdso|libc|libm|libgcc_s|ld-linux[-\w]*|libpthread|libdl|librt|libz)\.so")
# The build tools the wheel must not need, hidden while it runs.
HIDDEN_DIRS = ["/usr/lib/llvm-*", "/usr/include/bpf"]
HIDDEN_FILES = ["/usr/bin/clang*", "/usr/bin/llc*", "/usr/bin/llvm-*", "/usr/bin/bpftool", "/usr/include/libelf.h",
                "/usr/include/gelf.h", "/usr/lib/*-linux-gnu/libelf*.so*", "/usr/lib/*-linux-gnu/libbpf*"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel .ci/run built (target/wheels), else one built now."""
    built = sorted((ROOT / "target" / "wheels").glob("tracer_ebpf-*.whl"))
    if built:
        return built[-1]
    out = tmp_path_factory.mktemp("wheels")
    subprocess.run([tool("maturin"), "build", "--release", "-o", str(out)], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    return next(out.glob("tracer_ebpf-*.whl"))


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment with only the wheel installed."""
    v = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(v)], check=True)
    subprocess.run([str(v / "bin" / "pip"), "install", "-q", "--no-index", "--disable-pip-version-check", str(wheel)],
                   check=True)
    return v


def test_wheel_is_manylinux_abi3_and_bundles_libelf(wheel):
    tag = wheel.name[:-len(".whl")].split("-", 2)[2]
    print("wheel tag:", tag)
    assert re.fullmatch(r"cp39-abi3-manylinux_2_\d+_(x86_64|aarch64)", tag), tag


def test_extension_links_only_the_base_system(venv):
    (so,) = venv.glob("lib/python3*/site-packages/tracer_ebpf/_native*.so")
    libs = (so.parent.parent / "tracer_ebpf.libs").resolve()
    out = subprocess.run(["ldd", str(so)], capture_output=True, text=True, check=True).stdout
    print(out)
    for line in out.splitlines():
        name = line.split()[0]
        path = line.split("=>")[1].split("(")[0].strip() if "=>" in line else ""
        assert "not found" not in line, line
        assert SYSTEM_LIBS.match(os.path.basename(name)) or Path(path).resolve().parent == libs, line
    assert any(p.name.startswith("libelf") for p in libs.iterdir())


def test_the_installed_cli_runs_without_clang_llvm_or_libelf(venv, tmp_path):
    out = tmp_path / "out.jsonl"
    empty_dir, empty_file = tmp_path / "empty", tmp_path / "empty-file"
    empty_dir.mkdir()
    empty_file.touch()
    script = f"""
set -e
mount --make-rprivate /
for f in {" ".join(HIDDEN_FILES)}; do
    [ -e "$f" ] && mount --bind {empty_file} "$(readlink -f "$f")"
done
for d in {" ".join(HIDDEN_DIRS)}; do
    [ -d "$d" ] && mount --bind {empty_dir} "$d"
done
! clang --version >/dev/null 2>&1
[ ! -s /usr/include/libelf.h ]
for f in /usr/lib/*-linux-gnu/libelf*.so*; do [ ! -s "$f" ]; done
exec {venv}/bin/tracer-example --events syscalls/sys_enter_write -o {out} -- sh -c 'echo packaged'
"""
    env = {"PATH": f"{venv}/bin:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    r = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "packaged\n"
    assert "Traceback" not in r.stderr
    evs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["payload"]["content"] for e in evs] == ["packaged\n"]


def test_sdist_has_what_the_build_needs(tmp_path):
    subprocess.run([tool("maturin"), "sdist", "-o", str(tmp_path)], cwd=ROOT, check=True, capture_output=True)
    (sdist,) = tmp_path.glob("tracer_ebpf-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for needed in ["pyproject.toml", "Cargo.toml", "Cargo.lock", "build.rs", "README.md", "rs/python/mod.rs",
                   "c/bootstrap.bpf.c", "typegen/events.toml", "vendor/vmlinux.h/include/x86/vmlinux.h",
                   "python/tracer_ebpf/__init__.py", "python/tracer_ebpf/_native.pyi", "python/tracer_ebpf/py.typed"]:
        assert needed in names, needed


# -- typing ---------------------------------------------------------------------------

def readme_python_blocks():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python\n"):]
    section = section[:section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_examples_are_the_typing_examples():
    examples = (ROOT / "tests" / "typing_examples.py").read_text()
    blocks = readme_python_blocks()
    assert len(blocks) >= 3
    for b in blocks:
        assert b in examples, b


def test_readme_examples_pass_mypy_strict():
    pytest.importorskip("mypy", reason="pip install mypy")
    r = subprocess.run([PY, "-m", "mypy", "--strict", "--no-incremental", "typing_examples.py"],
                       cwd=ROOT / "tests", capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def test_stubs_match_the_extension():
    pytest.importorskip("mypy", reason="pip install mypy")
    r = subprocess.run([PY, "-m", "mypy.stubtest", "tracer_ebpf._native"], cwd=ROOT / "tests",
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def test_package_passes_mypy_strict():
    pytest.importorskip("mypy", reason="pip install mypy")
    pytest.importorskip("pandas", reason="pip install pandas pandas-stubs")  # frame.py's imports
    import tracer_ebpf

    r = subprocess.run([PY, "-m", "mypy", "--strict", "--no-incremental", "python/tracer_ebpf"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (Path(tracer_ebpf.__file__).parent / "py.typed").exists()
