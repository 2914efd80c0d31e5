/*
 * tbwork: the benchmark workload.
 *
 * Writes N payloads of S bytes each to fd 1 from T threads (N is the total,
 * split evenly over the threads) and reports on stderr how long the write
 * phase took. Every payload is self-describing so a capture can be verified
 * byte for byte (all integers little-endian):
 *
 *   off  0  u32  magic        "TBWK" (0x4b574254)
 *   off  4  u32  thread       thread index, 0..T-1
 *   off  8  u64  seq          per-thread sequence number, 0..
 *   off 16  u32  len          payload length S (header included)
 *   off 20  u32  crc          CRC-32 (zlib) of bytes [0,20) ++ [24,len)
 *   off 24  u32  body_off     where the body starts in the shared block
 *   off 28  u32  hcrc         CRC-32 of bytes [0,20) ++ [24,28) (header only,
 *                             so a truncated capture still identifies itself)
 *   off 32  ...  body         block[body_off .. body_off + len - 32]
 *
 * The block is BLOCK_LEN pseudo-random bytes from xorshift64* (seed below);
 * bench/run.py regenerates it independently. It contains NUL bytes, control
 * bytes and bytes that are not valid UTF-8.
 *
 * The process names itself "tbwork" (threads inherit it) so tracers can
 * filter on comm. The timed phase excludes setup: payload buffers and body
 * checksums are prepared first, so each write costs only a 32-byte header
 * update and the write(2) itself.
 *
 * usage: tbwork -n WRITES -s BYTES [-t THREADS] [--dump-block FILE]
 * build: cc -O2 -pthread -o tbwork workload.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define MAGIC 0x4b574254u
#define HDR_LEN 32
#define MAX_LEN (1u << 20)
#define BLOCK_LEN ((2u << 20) + 65536)
#define BODY_OFF_RANGE (1u << 20)
#define SEED 0x9e3779b97f4a7c15ull
#define VARIANTS 8 /* distinct bodies per thread, chosen by seq % VARIANTS */

/* ---- CRC-32 (zlib polynomial) with zlib's combine operator ---- */
#define POLY 0xedb88320u
static uint32_t crc_table[8][256];
static uint32_t x2n_table[32];

static uint32_t multmodp(uint32_t a, uint32_t b) {
    uint32_t m = 1u << 31, p = 0;
    for (;;) {
        if (a & m) {
            p ^= b;
            if ((a & (m - 1)) == 0)
                break;
        }
        m >>= 1;
        b = b & 1 ? (b >> 1) ^ POLY : b >> 1;
    }
    return p;
}

static uint32_t x2nmodp(uint64_t n, unsigned k) {
    uint32_t p = 1u << 31; /* x^0 */
    while (n) {
        if (n & 1)
            p = multmodp(x2n_table[k & 31], p);
        n >>= 1;
        k++;
    }
    return p;
}

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int j = 0; j < 8; j++)
            c = c & 1 ? (c >> 1) ^ POLY : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
    uint32_t p = 1u << 30; /* x^1 */
    x2n_table[0] = p;
    for (int n = 1; n < 32; n++)
        x2n_table[n] = p = multmodp(p, p);
}

/* zlib-compatible crc32(crc, buf, len): pass 0 to start. */
static uint32_t crc32_update(uint32_t crc, const uint8_t *b, size_t n) {
    crc = ~crc;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, b, 8);
        v ^= crc;
        crc = crc_table[7][v & 0xff] ^ crc_table[6][(v >> 8) & 0xff] ^ crc_table[5][(v >> 16) & 0xff] ^
              crc_table[4][(v >> 24) & 0xff] ^ crc_table[3][(v >> 32) & 0xff] ^ crc_table[2][(v >> 40) & 0xff] ^
              crc_table[1][(v >> 48) & 0xff] ^ crc_table[0][v >> 56];
        b += 8;
        n -= 8;
    }
    while (n--)
        crc = crc_table[0][(crc ^ *b++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* ---- the shared pseudo-random block ---- */
static uint8_t *block;

static void block_init(void) {
    block = malloc(BLOCK_LEN);
    if (!block) {
        perror("tbwork: malloc");
        exit(1);
    }
    uint64_t x = SEED;
    for (size_t i = 0; i < BLOCK_LEN; i += 8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        uint64_t v = x * 0x2545f4914f6cdd1dull;
        memcpy(block + i, &v, 8); /* little-endian host assumed (x86-64/arm64) */
    }
}

static uint32_t body_offset(uint32_t thread, uint32_t variant) {
    uint64_t h = ((uint64_t)thread * VARIANTS + variant + 1) * 0x9e3779b97f4a7c15ull;
    h ^= h >> 29;
    return (uint32_t)(h % BODY_OFF_RANGE);
}

static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

/* ---- threads ---- */
struct worker {
    pthread_t th;
    uint32_t index;
    uint64_t writes;
    uint32_t len;
    uint8_t *buf[VARIANTS];
    uint32_t body_crc[VARIANTS];
    uint32_t shift_op; /* x^(8*(len-32)) mod P: combines header and body CRCs */
    uint64_t errors;
    uint64_t t_start, t_end; /* CLOCK_MONOTONIC ns around this thread's writes */
};

static pthread_barrier_t start_barrier;
static uint64_t now_ns(void);

static void *work(void *arg) {
    struct worker *w = arg;
    pthread_barrier_wait(&start_barrier);
    w->t_start = now_ns();
    for (uint64_t seq = 0; seq < w->writes; seq++) {
        unsigned v = seq % VARIANTS;
        uint8_t *p = w->buf[v];
        put64(p + 8, seq);
        /* hcrc over [0,20) ++ [24,28) */
        uint32_t h = crc32_update(0, p, 20);
        h = crc32_update(h, p + 24, 4);
        put32(p + 28, h);
        uint32_t c = crc32_update(0, p, 20);
        c = crc32_update(c, p + 24, 8);
        if (w->len > HDR_LEN)
            c = multmodp(w->shift_op, c) ^ w->body_crc[v];
        put32(p + 20, c);
        size_t done = 0;
        while (done < w->len) {
            ssize_t r = write(1, p + done, w->len - done);
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                w->errors++;
                break;
            }
            done += (size_t)r;
            if (done < w->len)
                w->errors++; /* a short write splits the payload: counted, tracers will see two */
        }
    }
    w->t_end = now_ns();
    return NULL;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void usage(void) {
    fprintf(stderr, "usage: tbwork -n WRITES -s BYTES [-t THREADS] [--dump-block FILE]\n");
    exit(2);
}

int main(int argc, char **argv) {
    uint64_t start_mono = now_ns();
    prctl(PR_SET_NAME, "tbwork", 0, 0, 0);
    uint64_t n = 0;
    long s = 0, t = 1;
    const char *dump = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-n") && i + 1 < argc)
            n = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "-s") && i + 1 < argc)
            s = strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "-t") && i + 1 < argc)
            t = strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--dump-block") && i + 1 < argc)
            dump = argv[++i];
        else
            usage();
    }
    crc_init();
    block_init();
    if (dump) {
        FILE *f = fopen(dump, "wb");
        if (!f || fwrite(block, 1, BLOCK_LEN, f) != BLOCK_LEN || fclose(f)) {
            perror("tbwork: dump");
            return 1;
        }
        return 0;
    }
    if (s < HDR_LEN || s > (long)MAX_LEN || t < 1 || t > 1024) {
        fprintf(stderr, "tbwork: need %d <= -s <= %u and 1 <= -t <= 1024\n", HDR_LEN, MAX_LEN);
        return 2;
    }
    struct worker *ws = calloc((size_t)t, sizeof *ws);
    if (!ws)
        return 1;
    uint32_t len = (uint32_t)s, body = len - HDR_LEN;
    for (long i = 0; i < t; i++) {
        struct worker *w = &ws[i];
        w->index = (uint32_t)i;
        w->writes = n / (uint64_t)t + ((uint64_t)i < n % (uint64_t)t ? 1 : 0);
        w->len = len;
        w->shift_op = x2nmodp(body, 3);
        for (unsigned v = 0; v < VARIANTS; v++) {
            uint8_t *p = malloc(len);
            if (!p) {
                perror("tbwork: malloc");
                return 1;
            }
            uint32_t off = body_offset(w->index, v);
            put32(p, MAGIC);
            put32(p + 4, w->index);
            put64(p + 8, 0);
            put32(p + 16, len);
            put32(p + 20, 0);
            put32(p + 24, off);
            put32(p + 28, 0);
            memcpy(p + HDR_LEN, block + off, body);
            w->buf[v] = p;
            w->body_crc[v] = crc32_update(0, p + HDR_LEN, body);
        }
    }
    if (pthread_barrier_init(&start_barrier, NULL, (unsigned)t + 1)) {
        fprintf(stderr, "tbwork: barrier failed\n");
        return 1;
    }
    for (long i = 0; i < t; i++) {
        if (pthread_create(&ws[i].th, NULL, work, &ws[i])) {
            fprintf(stderr, "tbwork: pthread_create failed\n");
            return 1;
        }
    }
    pthread_barrier_wait(&start_barrier);
    /* The write phase: from the first thread's first write to the last
     * thread's last write (each thread stamps its own start and end, so a
     * descheduled main thread does not distort it). */
    uint64_t errors = 0, t0 = UINT64_MAX, t1 = 0;
    for (long i = 0; i < t; i++) {
        pthread_join(ws[i].th, NULL);
        errors += ws[i].errors;
        if (ws[i].t_start < t0)
            t0 = ws[i].t_start;
        if (ws[i].t_end > t1)
            t1 = ws[i].t_end;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    fprintf(stderr,
            "tbwork: writes=%llu size=%u threads=%ld elapsed_ns=%llu start_mono_ns=%llu first_write_mono_ns=%llu "
            "utime_us=%lld stime_us=%lld errors=%llu\n",
            (unsigned long long)n, len, t, (unsigned long long)(t1 - t0), (unsigned long long)start_mono,
            (unsigned long long)t0, (long long)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec,
            (long long)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec, (unsigned long long)errors);
    return errors ? 1 : 0;
}
