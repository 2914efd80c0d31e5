"""The Python examples of README.md, checked by `mypy --strict` in
test_packaging.py (which also checks that every README example is here,
verbatim). Type-checked only: never run (it would trace until interrupted)."""

# fmt: off
# -- README "## Python" -------------------------------------------------------
import tracer_ebpf

with tracer_ebpf.Tracer(events="syscalls/sys_enter_write") as t:
    for ev in t:                          # Ctrl-C stops and detaches
        print(ev.pid, ev.comm, ev.payload["content"])   # content is bytes

r = tracer_ebpf.trace(["sh", "-c", "echo hi | tr a-z A-Z"])   # run and trace a command
print(r.returncode, [e.text() for e in r.events])

# -----------------------------------------------------------------------------
from tracer_ebpf import Tracer, list_events

for info in list_events():                # the catalogue: name, comment, fields
    print(info["name"], info["comment"], info["fields"])

try:
    with Tracer(["syscalls/sys_*_openat", "sched/sched_process_exit"],  # names or wildcards
                pids=[1], follow_children=True,   # a process tree (or comm="python": name prefixes)
                content_fds=[1, 2], content_max=4096) as t:
        for ev in t.read(max_events=1000, timeout=0.5):   # or t.poll(timeout), t.collect(seconds)
            print(ev.event_type, ev.pid, ev.payload)
            print(ev.to_json())           # exactly the line tracer-example prints
        print(t.stats())                  # every counter: records, ring_full, payload_full, ...
except PermissionError as e:              # names the capabilities to grant
    print(e)
except ValueError as e:                   # unknown event (lists close names) or bad option
    print(e)

# -- README "### OpenTelemetry export" ----------------------------------------
import tracer_ebpf

with tracer_ebpf.OtlpExporter("http://collector:4318") as exporter:   # or the OTEL_* variables
    with tracer_ebpf.Tracer("sched/sched_process_exec") as t:
        for _ in range(100):
            t.export(exporter, timeout=0.1)   # events to OTLP log records, never waits
    print(exporter.stats())                   # exported, export_failed, export_dropped, ...

# -- README "### Notebooks" ---------------------------------------------------
import tracer_ebpf

with tracer_ebpf.Tracer("syscalls/sys_enter_write", comm="python") as t:
    df = t.to_dataframe(5.0)              # 5 seconds of events: pip install 'tracer-ebpf[pandas]'
print(df.groupby("comm")["payload.count"].sum())

with tracer_ebpf.Tracer("syscalls/sys_enter_write") as t:
    batch = t.poll_arrow(max_events=100_000, timeout=1.0)    # one Arrow record batch
import duckdb, polars                     # pyarrow.table(batch) too: each takes it without a copy
frame = polars.DataFrame(batch)
print(duckdb.execute('select comm, sum("payload.count") from batch group by comm').fetchall())

# -- docs/parquet.md: Parquet datasets ------------------------------------------
from tracer_ebpf import DatasetError, ParquetDataset

with tracer_ebpf.Tracer("syscalls/sys_enter_write") as t, ParquetDataset("/var/tmp/trace", host="lab") as ds:
    for _ in range(600):
        n: int = t.write_parquet(ds, timeout=0.1)    # no Python object per event
    lines, count = t.write_parquet_json(ds, 0.0)     # the same, and the JSON lines of those events
    ds.write(t.poll(0.1))                             # Events from Python
    t.close()
    summary = ds.close(t.stats())
    print(summary["files"], summary["rows"], summary["bytes"], summary["paths"][:1], summary["side_file"])
try:
    ParquetDataset("/var/tmp/trace", host="a/b", max_file_bytes=64 << 20, max_file_seconds=60.0)
except ValueError as e:                               # ConfigError: host, sizes
    print(e)
except DatasetError as e:                             # an OSError: the directory cannot be written
    print(e)
