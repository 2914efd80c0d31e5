// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The JSON line of an event, byte for byte the format of rs/json.rs (its
 * module doc has the rules; every branch below mirrors one there):
 *  - strings: `"` and `\` escaped; \n \r \t as such; other controls (C0
 *    below 0x20, DEL, C1 U+0080-U+009F) as \u00xx (lower-case hex); other
 *    valid UTF-8 passes through; each byte that does not start a valid UTF-8
 *    sequence becomes U+FFFD;
 *  - every string that is not valid UTF-8 also gets "<name>_base64" (comm
 *    too; for char[][] a list, one per string);
 *  - variable fields not captured are null; "<name>_lost" says why (every
 *    such field has one);
 *    "<name>_truncated":true and "<name>_size" mark a cut;
 *  - integer fields with a decode hint get "<name>_name".
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

#include "bootstrap-api.h"

/* snprintf-style output: counts everything, stores what fits. */
struct sink {
	char *buf;
	size_t cap; /* bytes available for text (the NUL excluded) */
	size_t len; /* full length so far */
};

static void put(struct sink *s, const void *p, size_t n)
{
	if (s->len < s->cap) {
		size_t room = s->cap - s->len;
		memcpy(s->buf + s->len, p, n < room ? n : room);
	}
	s->len += n;
}

static void put_c(struct sink *s, char c)
{
	if (s->len < s->cap)
		s->buf[s->len] = c;
	s->len++;
}

static void put_z(struct sink *s, const char *z)
{
	put(s, z, strlen(z));
}

static void put_u64(struct sink *s, uint64_t v)
{
	char tmp[24];
	int n = snprintf(tmp, sizeof tmp, "%" PRIu64, v);
	put(s, tmp, (size_t)n);
}

static void put_i64(struct sink *s, int64_t v)
{
	char tmp[24];
	int n = snprintf(tmp, sizeof tmp, "%" PRId64, v);
	put(s, tmp, (size_t)n);
}

/* Length of the valid UTF-8 sequence at b[0] (n >= 1 bytes available), or
 * 0 if none: the same table as rs/json.rs utf8_len (and Rust's std). */
static size_t utf8_len(const uint8_t *b, size_t n)
{
#define CONT(i, lo, hi) ((i) < n && b[i] >= (lo) && b[i] <= (hi))
	uint8_t c = b[0];
	if (c <= 0x7f)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		return CONT(1, 0x80, 0xbf) ? 2 : 0;
	if (c == 0xe0)
		return CONT(1, 0xa0, 0xbf) && CONT(2, 0x80, 0xbf) ? 3 : 0;
	if ((c >= 0xe1 && c <= 0xec) || c == 0xee || c == 0xef)
		return CONT(1, 0x80, 0xbf) && CONT(2, 0x80, 0xbf) ? 3 : 0;
	if (c == 0xed)
		return CONT(1, 0x80, 0x9f) && CONT(2, 0x80, 0xbf) ? 3 : 0;
	if (c == 0xf0)
		return CONT(1, 0x90, 0xbf) && CONT(2, 0x80, 0xbf) && CONT(3, 0x80, 0xbf) ? 4 : 0;
	if (c >= 0xf1 && c <= 0xf3)
		return CONT(1, 0x80, 0xbf) && CONT(2, 0x80, 0xbf) && CONT(3, 0x80, 0xbf) ? 4 : 0;
	if (c == 0xf4)
		return CONT(1, 0x80, 0x8f) && CONT(2, 0x80, 0xbf) && CONT(3, 0x80, 0xbf) ? 4 : 0;
	return 0;
#undef CONT
}

static int utf8_valid(const uint8_t *b, size_t n)
{
	size_t i = 0;
	while (i < n) {
		if (b[i] < 0x80) {
			i++;
			continue;
		}
		size_t k = utf8_len(b + i, n - i);
		if (!k)
			return 0;
		i += k;
	}
	return 1;
}

static int plain(uint8_t c)
{
	return c >= 0x20 && c <= 0x7e && c != '"' && c != '\\';
}

/* `b` as a JSON string. */
static void put_json_str(struct sink *s, const uint8_t *b, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	put_c(s, '"');
	size_t i = 0;
	while (i < n) {
		size_t run = i;
		while (run < n && plain(b[run]))
			run++;
		if (run > i) {
			put(s, b + i, run - i);
			i = run;
			continue;
		}
		uint8_t c = b[i];
		switch (c) {
		case '"': put_z(s, "\\\""); break;
		case '\\': put_z(s, "\\\\"); break;
		case '\n': put_z(s, "\\n"); break;
		case '\r': put_z(s, "\\r"); break;
		case '\t': put_z(s, "\\t"); break;
		default:
			if (c < 0x20 || c == 0x7f) {
				char e[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };
				put(s, e, 6);
			} else {
				size_t k = utf8_len(b + i, n - i);
				if (!k) {
					put(s, "\xef\xbf\xbd", 3); /* U+FFFD */
				} else if (k == 2 && c == 0xc2 && b[i + 1] < 0xa0) { /* C1 control */
					char e[6] = { '\\', 'u', '0', '0', hex[b[i + 1] >> 4], hex[b[i + 1] & 15] };
					put(s, e, 6);
					i += 2;
					continue;
				} else {
					put(s, b + i, k);
					i += k;
					continue;
				}
			}
		}
		i++;
	}
	put_c(s, '"');
}

static void put_base64(struct sink *s, const uint8_t *b, size_t n)
{
	static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	for (size_t i = 0; i < n; i += 3) {
		size_t m = n - i < 3 ? n - i : 3;
		uint32_t v = (uint32_t)b[i] << 16 | (m > 1 ? (uint32_t)b[i + 1] << 8 : 0) | (m > 2 ? b[i + 2] : 0);
		char q[4] = { A[(v >> 18) & 63], A[(v >> 12) & 63], m > 1 ? A[(v >> 6) & 63] : '=',
			      m > 2 ? A[v & 63] : '=' };
		put(s, q, 4);
	}
}

static const char *lookup(const struct tb_symbol *table, long long v)
{
	for (; table->name; table++)
		if (table->value == v)
			return table->name;
	return NULL;
}

/* ,"<name>_name":"<symbol>" when the hint names `v` (rs/json.rs decoded_name). */
static void put_decoded(struct sink *s, const char *name, enum tb_decode d, int64_t v)
{
	const char *sym = NULL;
	switch (d) {
	case TB_DECODE_NONE:
		return;
	case TB_DECODE_ERRNO:
		if (v < 0 && v != INT64_MIN)
			sym = lookup(tb_errno, -v);
		break;
	case TB_DECODE_SIGNAL:
		sym = lookup(tb_signals, v);
		break;
	case TB_DECODE_OPEN_FLAGS: {
		put_z(s, ",\"");
		put_z(s, name);
		put_z(s, "_name\":\"");
		put_z(s, tb_open_accmode[v & 3]);
		int64_t rest = v & ~(int64_t)3;
		for (const struct tb_symbol *f = tb_open_flags; f->name; f++) {
			if (rest & f->value) {
				put_c(s, '|');
				put_z(s, f->name);
				rest &= ~(int64_t)f->value;
			}
		}
		if (rest) {
			char tmp[24];
			int k = snprintf(tmp, sizeof tmp, "|0x%" PRIx64, (uint64_t)rest);
			put(s, tmp, (size_t)k);
		}
		put_c(s, '"');
		return;
	}
	}
	if (sym) {
		put_z(s, ",\"");
		put_z(s, name);
		put_z(s, "_name\":\"");
		put_z(s, sym);
		put_c(s, '"');
	}
}

/* A char[][] field as a JSON list: of its strings, or with `b64` of their
 * base64. NUL-separated; one trailing NUL is a terminator; empty ones kept.
 * No bytes is no strings; a lone NUL is one empty string. */
static void put_str_list(struct sink *s, const struct tb_field *f, int b64)
{
	size_t n = f->len;
	if (n && f->data[n - 1] == 0)
		n--;
	put_c(s, '[');
	if (f->len) {
		size_t start = 0;
		for (size_t i = 0; i <= n; i++) {
			if (i == n || f->data[i] == 0) {
				if (start)
					put_c(s, ',');
				if (b64) {
					put_c(s, '"');
					put_base64(s, f->data + start, i - start);
					put_c(s, '"');
				} else {
					put_json_str(s, f->data + start, i - start);
				}
				start = i + 1;
			}
		}
	}
	put_c(s, ']');
}

static void put_var(struct sink *s, const struct tb_field *f)
{
	const char *name = f->desc->name;
	uint32_t fl = f->flags;
	if (fl & (TB_VAR_NOT_CAPTURED | TB_VAR_NO_SPACE | TB_VAR_OVERWRITTEN | TB_VAR_NULL_POINTER | TB_VAR_UNAVAILABLE)) {
		put_z(s, "null");
	} else if (f->desc->kind == TB_FK_STRLIST) {
		put_str_list(s, f, 0);
		if (!utf8_valid(f->data, f->len)) {
			put_z(s, ",\"");
			put_z(s, name);
			put_z(s, "_base64\":");
			put_str_list(s, f, 1);
		}
	} else {
		put_json_str(s, f->data, f->len);
		if (!utf8_valid(f->data, f->len)) {
			put_z(s, ",\"");
			put_z(s, name);
			put_z(s, "_base64\":\"");
			put_base64(s, f->data, f->len);
			put_c(s, '"');
		}
	}
	const char *why = fl & TB_VAR_NO_SPACE ? "payload_full"
			  : fl & TB_VAR_OVERWRITTEN ? "overwritten"
			  : fl & TB_VAR_FAULT ? "fault"
			  : fl & TB_VAR_NOT_CAPTURED ? "not_selected"
			  : fl & TB_VAR_NULL_POINTER ? "null_pointer"
			  : fl & TB_VAR_UNAVAILABLE ? "unavailable"
			  : NULL;
	if (why) {
		put_z(s, ",\"");
		put_z(s, name);
		put_z(s, "_lost\":\"");
		put_z(s, why);
		put_c(s, '"');
	}
	if (fl & TB_VAR_TRUNCATED) {
		put_z(s, ",\"");
		put_z(s, name);
		put_z(s, "_truncated\":true");
		if (f->size) {
			put_z(s, ",\"");
			put_z(s, name);
			put_z(s, "_size\":");
			put_u64(s, f->size);
		}
	}
}

size_t tb_event_to_json(const struct tb_event *e, char *buf, size_t size)
{
	struct sink s = { buf, size ? size - 1 : 0, 0 };
	if (!buf)
		s.cap = 0;
	put_z(&s, "{\"event_id\":");
	put_u64(&s, e->event_id);
	put_z(&s, ",\"event_type\":\"");
	put_z(&s, e->desc ? e->desc->name : "?");
	put_z(&s, "\",\"timestamp_ns\":");
	put_u64(&s, e->timestamp_ns);
	put_z(&s, ",\"pid\":");
	put_u64(&s, e->pid);
	put_z(&s, ",\"tid\":");
	put_u64(&s, e->tid);
	put_z(&s, ",\"ppid\":");
	put_u64(&s, e->ppid);
	put_z(&s, ",\"upid\":");
	put_u64(&s, e->upid);
	put_z(&s, ",\"uppid\":");
	put_u64(&s, e->uppid);
	put_z(&s, ",\"comm\":");
	put_json_str(&s, (const uint8_t *)e->comm, e->comm_len);
	if (!utf8_valid((const uint8_t *)e->comm, e->comm_len)) {
		put_z(&s, ",\"comm_base64\":\"");
		put_base64(&s, (const uint8_t *)e->comm, e->comm_len);
		put_c(&s, '"');
	}
	put_z(&s, ",\"payload\":{");
	for (uint32_t k = 0; k < e->nfields; k++) {
		const struct tb_field *f = &e->fields[k];
		const struct tb_field_desc *d = f->desc;
		if (k)
			put_c(&s, ',');
		put_c(&s, '"');
		put_z(&s, d->name);
		put_z(&s, "\":");
		switch (d->kind) {
		case TB_FK_U8: case TB_FK_U16: case TB_FK_U32: case TB_FK_U64:
			put_u64(&s, f->u);
			put_decoded(&s, d->name, d->decode, (int64_t)f->u);
			break;
		case TB_FK_I8: case TB_FK_I16: case TB_FK_I32: case TB_FK_I64:
			put_i64(&s, f->i);
			put_decoded(&s, d->name, d->decode, f->i);
			break;
		case TB_FK_STR: case TB_FK_STRLIST: case TB_FK_BYTES:
			put_var(&s, f);
			break;
		}
	}
	put_z(&s, "}}");
	if (buf && size)
		buf[s.len < size ? s.len : size - 1] = '\0';
	return s.len;
}

long tb_event_to_json_alloc(const struct tb_event *e, char **buf, size_t *cap)
{
	if (!buf || !cap) {
		errno = EINVAL;
		return -1;
	}
	size_t n = tb_event_to_json(e, *buf, *buf ? *cap : 0);
	if (*buf && n < *cap)
		return (long)n;
	size_t want = n + 1;
	if (*buf && want < *cap * 2)
		want = *cap * 2;
	char *nb = realloc(*buf, want);
	if (!nb) {
		errno = ENOMEM;
		return -1;
	}
	*buf = nb;
	*cap = want;
	return (long)tb_event_to_json(e, nb, want);
}
