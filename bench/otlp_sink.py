#!/usr/bin/env python3
"""A receiver for bench/outputs.py: takes OTLP log export requests and
answers success without decoding them (so that what is measured is the
exporter, not this process).

    python3 bench/otlp_sink.py {http|grpc} COUNTS

Prints "PORT <n>" once it listens; on SIGTERM writes "<requests> <bytes>"
to COUNTS and exits.
"""

import http.server
import signal
import sys
import threading
from concurrent import futures

received = [0, 0]
lock = threading.Lock()


def count(n: int) -> None:
    with lock:
        received[0] += 1
        received[1] += n


def serve_http() -> int:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            count(len(body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def serve_grpc() -> int:
    import grpc

    def export(request: bytes, context: object) -> bytes:
        count(len(request))
        return b""  # an empty ExportLogsServiceResponse: full success

    handler = grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.logs.v1.LogsService",
        {"Export": grpc.unary_unary_rpc_method_handler(export)})  # raw bytes in and out
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    serve_grpc.server = server  # type: ignore[attr-defined]
    return port


def main() -> int:
    proto, counts = sys.argv[1], sys.argv[2]
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    port = serve_http() if proto == "http" else serve_grpc()
    print(f"PORT {port}", flush=True)
    done.wait()
    with lock, open(counts, "w") as f:
        f.write(f"{received[0]} {received[1]}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
