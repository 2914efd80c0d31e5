"""A test OTLP logs receiver, run as its own process by tests/test_otlp.py:

    python otlp_receiver.py {grpc|http} PORT OUT [--delay S] [--unavailable N]
                            [--retry-after S] [--refuse] [--reject N]

gRPC: the official LogsService (grpcio, the `opentelemetry-proto` package's
generated servicer; grpcio's default 4 MiB message limit). HTTP: http.server
taking POSTs of ExportLogsServiceRequest (binary protobuf, gzip or not).

For every request it receives it appends one JSON line to OUT, flushed
before it answers: {"t": arrival (time.time()), "status": the answer (200,
400, 503 for HTTP; "OK", "INVALID_ARGUMENT", "UNAVAILABLE" for gRPC), "size":
bytes of the decoded request, "gzip": bool (HTTP; null for gRPC), "headers": {...}, "path": ...,
"request": base64 of the decoded request (null unless it was taken)}.

--delay S: wait S seconds before answering each request (a slow receiver).
--unavailable N: answer the first N requests UNAVAILABLE / 503 (with
    Retry-After S for HTTP when --retry-after S is given).
--refuse: answer every request INVALID_ARGUMENT / 400 (a google.rpc.Status
    body saying "refused by the test receiver").
--reject N: accept, but say in a partial success that N records were rejected.
--tls CERT KEY: serve TLS (https, or gRPC over TLS) with this PEM certificate
    chain and key.
Prints "PORT <n>" on stdout once it listens (PORT 0: any free port).
"""

import argparse
import base64
import gzip
import http.server
import json
import ssl
import sys
import threading
import time
from concurrent import futures

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as pb
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc as pb_grpc

REFUSED = "refused by the test receiver"


class Log:
    def __init__(self, path):
        self.f = open(path, "a")
        self.lock = threading.Lock()
        self.unavailable_left = 0

    def take_unavailable(self):
        with self.lock:
            if self.unavailable_left > 0:
                self.unavailable_left -= 1
                return True
            return False

    def record(self, status, size, gz, headers, path, raw):
        line = {"t": time.time(), "status": status, "size": size, "gzip": gz, "headers": headers, "path": path,
                "request": None if raw is None else base64.b64encode(raw).decode()}
        with self.lock:
            self.f.write(json.dumps(line) + "\n")
            self.f.flush()


def response(reject):
    r = pb.ExportLogsServiceResponse()
    if reject:
        r.partial_success.rejected_log_records = reject
        r.partial_success.error_message = "rejected by the test receiver"
    return r


def rpc_status(code, message):
    """A google.rpc.Status {code, message} (field 1 varint, field 2 string):
    the body of an OTLP/HTTP error answer."""
    m = message.encode()
    return bytes([0x08, code, 0x12, len(m)]) + m


def serve_grpc(port, log, args):
    class Logs(pb_grpc.LogsServiceServicer):
        def Export(self, request, context):
            md = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
            raw = request.SerializeToString()
            gz = None  # grpcio does not tell how a request was compressed
            if log.take_unavailable():
                log.record("UNAVAILABLE", len(raw), gz, md, "", None)
                context.abort(grpc.StatusCode.UNAVAILABLE, "unavailable (test receiver)")
            if args.refuse:
                log.record("INVALID_ARGUMENT", len(raw), gz, md, "", None)
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, REFUSED)
            log.record("OK", len(raw), gz, md, "", raw)
            time.sleep(args.delay)
            return response(args.reject)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_LogsServiceServicer_to_server(Logs(), server)
    if args.tls:
        cert, key = (open(f, "rb").read() for f in args.tls)
        bound = server.add_secure_port(f"127.0.0.1:{port}", grpc.ssl_server_credentials([(key, cert)]))
    else:
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"PORT {bound}", flush=True)
    server.wait_for_termination()


def serve_http(port, log, args):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            gz = self.headers.get("Content-Encoding") == "gzip"
            raw = gzip.decompress(body) if gz else body
            pb.ExportLogsServiceRequest.FromString(raw)  # a bad body fails the handler: no answer
            headers = {k.lower(): v for k, v in self.headers.items()}
            if log.take_unavailable():
                log.record(503, len(raw), gz, headers, self.path, None)
                extra = {"Retry-After": str(args.retry_after)} if args.retry_after is not None else {}
                return self.answer(503, b"", extra)
            if args.refuse:
                log.record(400, len(raw), gz, headers, self.path, None)
                return self.answer(400, rpc_status(3, REFUSED))
            log.record(200, len(raw), gz, headers, self.path, raw)
            time.sleep(args.delay)
            self.answer(200, response(args.reject).SerializeToString())

        def answer(self, code, body, extra=None):
            self.send_response(code)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    class Server(http.server.ThreadingHTTPServer):
        allow_reuse_address = True
        daemon_threads = True

    srv = Server(("127.0.0.1", port), Handler)
    if args.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*args.tls)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print(f"PORT {srv.server_port}", flush=True)
    srv.serve_forever()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("protocol", choices=("grpc", "http"))
    p.add_argument("port", type=int)
    p.add_argument("out")
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--unavailable", type=int, default=0)
    p.add_argument("--retry-after", type=int)
    p.add_argument("--refuse", action="store_true")
    p.add_argument("--reject", type=int, default=0)
    p.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    args = p.parse_args()
    log = Log(args.out)
    log.unavailable_left = args.unavailable
    (serve_grpc if args.protocol == "grpc" else serve_http)(args.port, log, args)


if __name__ == "__main__":
    sys.exit(main())
