// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
//
// C++ example of the C library: prints every captured event as one JSON
// line, the same format and CLI as rs/example.rs (`target/release/example`).
//
// usage: example [--events A,B] [--pid PID]... [--follow] [--snapshot] [--comm PREFIX]... [--cgroup PATH]... [--no-yield-cpu]
//                [--content-fds 1,2] [--content-max BYTES] [--duration SECS]
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bootstrap-api.h"

namespace {

std::atomic<bool> g_stop{false};
std::atomic<tb_tracer *> g_tracer{nullptr};

extern "C" void on_signal(int)
{
	g_stop.store(true);
	if (tb_tracer *t = g_tracer.load())
		tb_stop(t); // async-signal-safe
}

struct Args {
	std::vector<std::string> events;
	std::vector<uint32_t> pids;
	bool follow = false;
	bool snapshot = false;
	bool yield_cpu = true; // formatting waits while a burst's writers run (--no-yield-cpu)
	std::vector<std::string> comms;
	std::vector<std::string> cgroups;
	bool fds_set = false;
	std::vector<int> fds;
	uint32_t content_max = 0;
	double duration = -1; // < 0: until a signal
};

std::vector<std::string> split_list(const std::string &v)
{
	std::vector<std::string> out;
	size_t start = 0;
	while (start <= v.size()) {
		size_t comma = v.find(',', start);
		if (comma == std::string::npos)
			comma = v.size();
		std::string item = v.substr(start, comma - start);
		size_t a = item.find_first_not_of(" \t\n\r\f\v"), b = item.find_last_not_of(" \t\n\r\f\v");
		if (a != std::string::npos)
			out.push_back(item.substr(a, b - a + 1));
		start = comma + 1;
	}
	return out;
}

template <typename T> bool parse_uint(const std::string &s, T max, T *out)
{
	if (s.empty() || s[0] == '-' || s[0] == '+' || s.find_first_not_of("0123456789") != std::string::npos)
		return false;
	errno = 0;
	unsigned long long v = std::strtoull(s.c_str(), nullptr, 10);
	if (errno || v > (unsigned long long)max)
		return false;
	*out = (T)v;
	return true;
}

const char *const USAGE =
	"usage: example [--events A,B] [--pid PID]... [--follow] [--snapshot] [--comm PREFIX]... [--cgroup PATH]... "
	"[--content-fds 1,2] [--content-max BYTES] [--no-yield-cpu] [--duration SECS]";

// Returns an error message, or "" if the arguments are valid.
std::string parse_args(int argc, char **argv, Args *a)
{
	for (int i = 1; i < argc; i++) {
		std::string arg = argv[i];
		auto val = [&](std::string *out) -> bool {
			if (i + 1 >= argc)
				return false;
			*out = argv[++i];
			return true;
		};
		std::string v;
		if (arg == "--events") {
			if (!val(&v))
				return "--events needs a value";
			a->events = split_list(v);
		} else if (arg == "--pid") {
			if (!val(&v))
				return "--pid needs a value";
			uint32_t pid;
			if (!parse_uint<uint32_t>(v, UINT32_MAX, &pid))
				return "--pid: not a process id: \"" + v + "\"";
			a->pids.push_back(pid);
		} else if (arg == "--follow") {
			a->follow = true;
		} else if (arg == "--snapshot") {
			a->snapshot = true;
		} else if (arg == "--no-yield-cpu") {
			a->yield_cpu = false;
		} else if (arg == "--comm") {
			if (!val(&v))
				return "--comm needs a value";
			a->comms.push_back(v);
		} else if (arg == "--cgroup") {
			if (!val(&v))
				return "--cgroup needs a value";
			a->cgroups.push_back(v);
		} else if (arg == "--content-fds") {
			if (!val(&v))
				return "--content-fds needs a value";
			a->fds_set = true;
			a->fds.clear();
			for (const std::string &s : split_list(v)) {
				int fd;
				if (!parse_uint<int>(s, INT32_MAX, &fd))
					return "--content-fds: not an fd: \"" + s + "\"";
				a->fds.push_back(fd);
			}
		} else if (arg == "--content-max") {
			if (!val(&v))
				return "--content-max needs a value";
			uint32_t n;
			if (!parse_uint<uint32_t>(v, UINT32_MAX, &n) || n == 0)
				return "--content-max: not a byte count: \"" + v + "\"";
			a->content_max = n;
		} else if (arg == "--duration") {
			if (!val(&v))
				return "--duration needs a value";
			char *end = nullptr;
			double secs = std::strtod(v.c_str(), &end);
			if (v.empty() || *end || !std::isfinite(secs) || secs < 0)
				return "--duration: not a number of seconds: \"" + v + "\"";
			a->duration = secs;
		} else if (arg == "-h" || arg == "--help") {
			std::printf("%s\n", USAGE);
			std::exit(0);
		} else {
			return "unknown argument \"" + arg + "\" (see --help)";
		}
	}
	return "";
}

// Per-event output: the JSON line into a reused buffer, then stdout.
struct Output {
	std::vector<char> line = std::vector<char>(1 << 16);
	bool closed = false; // stdout went away (e.g. piped into head)
};

extern "C" int on_event(const tb_event *ev, void *ctx)
{
	Output *o = static_cast<Output *>(ctx);
	size_t n = tb_event_to_json(ev, o->line.data(), o->line.size());
	if (n >= o->line.size()) {
		o->line.resize(n + 1 + n / 2);
		n = tb_event_to_json(ev, o->line.data(), o->line.size());
	}
	o->line[n] = '\n';
	if (std::fwrite(o->line.data(), 1, n + 1, stdout) != n + 1) {
		o->closed = true;
		return 1; // stop delivering
	}
	return 0;
}

} // namespace

int main(int argc, char **argv)
{
	Args args;
	std::string err = parse_args(argc, argv, &args);
	if (!err.empty()) {
		std::fprintf(stderr, "example: %s\n", err.c_str());
		return 2;
	}

	struct sigaction sa;
	std::memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, nullptr);
	sigaction(SIGTERM, &sa, nullptr);
	std::signal(SIGPIPE, SIG_IGN); // a closed stdout is a write error, as in Rust

	static char outbuf[1 << 20];
	std::setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);

	std::vector<const char *> events, comms, cgroups;
	for (const std::string &e : args.events)
		events.push_back(e.c_str());
	for (const std::string &c : args.comms)
		comms.push_back(c.c_str());
	for (const std::string &c : args.cgroups)
		cgroups.push_back(c.c_str());
	Output out;
	tb_options o;
	std::memset(&o, 0, sizeof o);
	o.events = events.data();
	o.nevents = events.size();
	o.pids = args.pids.data();
	o.npids = args.pids.size();
	o.follow = args.follow;
	o.snapshot = args.snapshot;
	o.yield_cpu = args.yield_cpu;
	o.comms = comms.data();
	o.ncomms = comms.size();
	o.cgroups = cgroups.data();
	o.ncgroups = cgroups.size();
	if (args.fds_set) {
		static const int none = 0;
		o.content_fds = args.fds.empty() ? &none : args.fds.data();
		o.ncontent_fds = args.fds.size();
	}
	o.content_max = args.content_max;
	o.on_event = on_event;
	o.ctx = &out;

	tb_tracer *t = nullptr;
	char msg[8192];
	int rc = tb_open(&o, &t, msg, sizeof msg);
	if (rc != TB_OK) {
		std::fprintf(stderr, "example: %s\n", msg);
		return 1;
	}
	g_tracer.store(t);
	if (g_stop.load()) // a signal before the tracer existed
		tb_stop(t);
	std::fprintf(stderr, "example: tracing %zu event(s); Ctrl-C to stop\n", tb_nevents(t));

	using clock = std::chrono::steady_clock;
	const bool timed = args.duration >= 0;
	const clock::time_point deadline =
		clock::now() + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(timed ? args.duration : 0));
	int status = 0;
	while (!out.closed) {
		int timeout = 50;
		if (timed) {
			auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
			if (left <= 0)
				break;
			if (left < timeout)
				timeout = (int)left;
		}
		int n = tb_poll(t, timeout);
		if (n == TB_STOPPED)
			break;
		if (n < 0) {
			std::fprintf(stderr, "example: polling: %s\n", tb_strerror(n));
			status = 1;
			break;
		}
		if (n == 0 && std::fflush(stdout) != 0)
			out.closed = true;
	}
	// Drain what is already captured, then report.
	while (!out.closed && tb_consume(t) > 0)
		;
	std::fflush(stdout);
	struct tb_stats s;
	if (tb_stats(t, &s) == TB_OK) {
		std::string line = "example: stats";
		char kv[96];
		for (unsigned i = 0; i < TB_STAT_COUNT; i++) {
			std::snprintf(kv, sizeof kv, " %s=%llu", tb_stat_name(i), (unsigned long long)s.kernel[i]);
			line += kv;
		}
		std::snprintf(kv, sizeof kv, " delivered=%llu decode_errors=%llu overwritten=%llu seq_gaps=%llu queued=%llu",
			      (unsigned long long)s.delivered, (unsigned long long)s.decode_errors,
			      (unsigned long long)s.overwritten, (unsigned long long)s.seq_gaps,
			      (unsigned long long)s.queued);
		line += kv;
		std::fprintf(stderr, "%s\n", line.c_str());
	} else {
		std::fprintf(stderr, "example: stats unavailable\n");
	}
	g_tracer.store(nullptr); // the handler runs on this thread: no tb_stop() after this
	tb_close(t);
	return status;
}
