/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Copy helpers: variable fields (contents, strings, string lists) into the
 * payload area or inline, within their limits, flagged when cut or lost.
 */
#ifndef TB_BPF_COPY_H
#define TB_BPF_COPY_H

#include "record.h"

/* The copy loop is bounded for the largest variable field. */
#define TB_VAR_CEILING (1u << 20)

/*
 * Starts variable field `v` of `size` original bytes, at most `max` of them
 * kept: flags a cut, and checks the payload area has room for what will be
 * copied (all or nothing: a field is never delivered partly for lack of
 * room). Returns how many bytes to copy with tb_append (0: none).
 */
static __always_inline __u64 tb_var_start(struct tb_ctx *t, struct tb_var *v, __u64 size, __u64 max)
{
	if (max > TB_VAR_CEILING)
		max = TB_VAR_CEILING;
	__u64 want = size < max ? size : max;

	v->size = size;
	v->len = 0;
	if (want < size) {
		v->flags |= TB_VAR_TRUNCATED;
		tb_count(TB_STAT_TRUNCATED);
	}
	if (want && want <= t->inline_cap) { /* rides in the ring sample */
		v->flags |= TB_VAR_INLINE;
		return want;
	}
	if (want && !tb_room(t, want)) {
		v->flags |= TB_VAR_NO_SPACE;
		t->rec->flags |= TB_REC_PAYLOAD_LOST;
		tb_count(TB_STAT_PAYLOAD_FULL);
		return 0;
	}
	return want;
}

/*
 * Appends one piece of at most `n` bytes from `src` (user memory if `user`,
 * else the per-CPU scratch) to `v`: no more than TB_PIECE_MAX and never across
 * a chunk boundary, so it is a single bounded helper call. Room was checked
 * by tb_var_start. Returns the bytes appended; 0 on a fault (the field keeps
 * the bytes before it and is flagged TB_VAR_FAULT).
 */
static __always_inline __u64 tb_piece(struct tb_ctx *t, struct tb_var *v, const void *src, __u64 n, bool user)
{
	__u64 pos = t->ctl->head;
	__u32 off = pos & (TB_CHUNK_SIZE - 1);
	__u32 slot = t->cpu * tb_slots + (__u32)((pos / TB_CHUNK_SIZE) % tb_slots);
	__u64 *chunk = bpf_map_lookup_elem(&chunk_slot, &slot);
	if (!chunk)
		return 0;
	__u32 idx = (__u32)*chunk; /* tb_room mapped it */
	__u64 k = n;
	if (k > TB_CHUNK_SIZE - off)
		k = TB_CHUNK_SIZE - off;
	/* Keep this clamp: clang drops it where it knows n is small (a string
	 * of the scratch, tb_put_short), and verifiers before 6.8 learn no
	 * bound from the compares above (register against register), so the
	 * copy's size would be unbounded there. */
	barrier_var(k);
	if (k > TB_PIECE_MAX)
		k = TB_PIECE_MAX;
	barrier_var(k); /* and the clamped register is the size passed */
	struct tb_chunk *c = bpf_map_lookup_elem(&payload, &idx);
	if (!c)
		return 0;
	/* Reserve, then write: a reader checking `head` after its copy sees
	 * any writer that could have touched its bytes. */
	t->ctl->head = pos + k;
	long err = user ? bpf_probe_read_user(&c->data[off & (TB_CHUNK_SIZE - 1)], k, src)
			: bpf_probe_read_kernel(&c->data[off & (TB_CHUNK_SIZE - 1)], k, src);
	if (err) {
		t->ctl->head = pos; /* nothing of this piece was delivered */
		v->flags |= TB_VAR_FAULT;
		t->rec->flags |= TB_REC_PAYLOAD_LOST;
		tb_count(TB_STAT_FAULT);
		return 0;
	}
	v->len += (__u32)k;
	return k;
}

/* Where tb_append's bpf_loop over the pieces of a copy is. */
struct tb_append_walk {
	struct tb_ctx *t;
	struct tb_var *v;
	__u64 src;   /* address of the first byte to append */
	__u64 base;  /* v->len before the append */
	__u64 end;   /* v->len after it */
	__u64 user;  /* src is user memory (else kernel: the per-CPU scratch) */
	__u64 fault; /* a piece faulted */
};

/* Appends the next piece (a bpf_loop callback: the verifier checks one
 * piece, not every piece of the largest field, and progress is read back
 * from the record, a number it does not track). Returns 1 when the copy is
 * done or faulted. */
static long tb_append_step(__u64 i, void *ctx)
{
	struct tb_append_walk *w = ctx;
	__u64 done = w->v->len;
	__u64 k;

	if (done >= w->end)
		return 1;
	if (w->user)
		k = tb_piece(w->t, w->v, (const void *)(w->src + (done - w->base)), w->end - done, true);
	else /* the per-CPU scratch: the mask bounds the pointer arithmetic */
		k = tb_piece(w->t, w->v, (const void *)(w->src + ((done - w->base) & (TB_SCRATCH_SIZE - 1))),
			     w->end - done, false);
	if (!k) {
		w->fault = 1;
		return 1;
	}
	return 0;
}

/*
 * Appends `n` bytes from `src` to `v` in pieces (see tb_piece). Returns
 * false on a fault.
 */
static __always_inline bool tb_append(struct tb_ctx *t, struct tb_var *v, const void *src, __u64 n, bool user)
{
	__u64 base = *(volatile __u32 *)&v->len;
	struct tb_append_walk w = { .t = t, .v = v, .src = (__u64)src, .base = base, .end = base + n, .user = user };

	bpf_loop(TB_MAX_PIECES, tb_append_step, &w, 0);
	return !w.fault;
}

/* Copies the `n` bytes of inline field `v` (tb_var_start said it fits)
 * right after the record, in one helper call. */
static __always_inline void tb_inline(struct tb_ctx *t, struct tb_var *v, const void *src, __u64 n, bool user)
{
	__u64 k = n;
	if (k > t->inline_cap)
		k = t->inline_cap;
	/* The clamped register is the size passed: without this, clang may
	 * read `n` again from the stack for the call, and verifiers before 6.8
	 * do not carry the bound to that copy (6.1 rejected the write handler). */
	barrier_var(k);
	long err = user ? bpf_probe_read_user(t->rec + 1, k, src) : bpf_probe_read_kernel(t->rec + 1, k, src);
	if (err) {
		v->flags |= TB_VAR_FAULT;
		t->rec->flags |= TB_REC_PAYLOAD_LOST;
		tb_count(TB_STAT_FAULT);
		return;
	}
	t->rec->inline_len = (__u32)k;
	v->len = (__u32)k;
}

/* Puts the `n` bytes tb_var_start granted for `v`: inline, or in pieces
 * into the payload area. Kept apart so that the verifier walks the piece
 * loop once, not once per placement. */
static __always_inline void tb_put(struct tb_ctx *t, struct tb_var *v, const void *src, __u64 n, bool user)
{
	if (v->flags & TB_VAR_INLINE)
		tb_inline(t, v, src, n, user);
	else
		tb_append(t, v, src, n, user);
}

/* tb_put for at most TB_PIECE_MAX bytes of the per-CPU scratch (strings):
 * inline, or at most two pieces (one chunk boundary), without tb_append's
 * loop, which the verifier walks piece by piece (about 8,000 verified
 * instructions less per string field: openat's program went from 14,819 to
 * 6,071). */
static __always_inline void tb_put_short(struct tb_ctx *t, struct tb_var *v, const void *src, __u64 n)
{
	if (v->flags & TB_VAR_INLINE) {
		tb_inline(t, v, src, n, false);
		return;
	}
	__u64 k = tb_piece(t, v, src, n, false);
	if (k && k < n)
		tb_piece(t, v, src + (k & (TB_SCRATCH_SIZE - 1)), n - k, false);
}

/* Copies `size` bytes at `src` into variable field `v`, at most `max`. */
static __always_inline void tb_copy(struct tb_ctx *t, struct tb_var *v, const void *src,
				    __u64 size, __u64 max, bool user)
{
	__u64 n = tb_var_start(t, v, size, max);
	if (n)
		tb_put(t, v, src, n, user);
}

/* Copies bytes from user memory into variable field `v`. */
static __always_inline void tb_copy_user(struct tb_ctx *t, struct tb_var *v, const void *src,
					 __u64 size, __u64 max)
{
	tb_copy(t, v, src, size, max, true);
}

/*
 * Copies a NUL-terminated string (user or kernel memory; at most `max`
 * bytes, the NUL not stored) into variable field `v`. It is read whole into
 * per-CPU scratch first, so its length is known before it goes to the
 * payload area; reading max + 1 characters tells a string of exactly `max`
 * bytes from a longer one.
 */
static __always_inline void tb_copy_str(struct tb_ctx *t, struct tb_var *v, const char *src, __u64 max, bool user)
{
	__u32 zero = 0;
	struct tb_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return;
	if (max > TB_SCRATCH_SIZE - 2)
		max = TB_SCRATCH_SIZE - 2;
	long n = user ? bpf_probe_read_user_str(s->buf, max + 2, src) : bpf_probe_read_kernel_str(s->buf, max + 2, src);
	if (n < 0) {
		v->flags |= TB_VAR_FAULT;
		t->rec->flags |= TB_REC_PAYLOAD_LOST;
		tb_count(TB_STAT_FAULT);
		return;
	}
	__u64 len = n > 0 ? n - 1 : 0; /* without the NUL */
	__u64 size = len;
	if (len > max) {
		size = 0; /* longer than max: original length unknown */
		len = max;
	}
	if (tb_var_start(t, v, len, max))
		tb_put_short(t, v, s->buf, len & (TB_SCRATCH_SIZE - 1));
	if (size == 0 && len == max) {
		v->flags |= TB_VAR_TRUNCATED;
		tb_count(TB_STAT_TRUNCATED);
	}
	v->size = size;
}

/* A user string into variable field `v`. */
static __always_inline void tb_copy_user_str(struct tb_ctx *t, struct tb_var *v, const char *src, __u64 max)
{
	tb_copy_str(t, v, src, max, true);
}

#define TB_LIST_CUT (1ull << 32)
#define TB_LIST_FAULT (1ull << 33)

/* Where tb_gather_str_list's bpf_loop is. The bytes gathered so far are
 * kept in the scratch (s->list_len), read back as a number the verifier
 * does not track (see tb_append). */
struct tb_str_list_walk {
	__u64 src;
	struct tb_scratch *s;
	__u64 result;
};

/* Gathers string `i` of the array (a bpf_loop callback: the verifier checks
 * one string, not all TB_GENERIC_LIST_STRS). Returns 1 when the gathering
 * ends, with its result set. */
static long tb_str_list_step(__u64 i, void *ctx)
{
	struct tb_str_list_walk *w = ctx;
	struct tb_scratch *s = w->s;
	__u64 off = *(volatile __u64 *)&s->list_len;
	const char *str = NULL;

	if (bpf_probe_read_user(&str, sizeof(str), (const void *)(w->src + i * sizeof(str)))) {
		w->result = off | TB_LIST_FAULT;
		return 1;
	}
	if (!str) {
		w->result = off;
		return 1;
	}
	if (i >= TB_GENERIC_LIST_STRS || off >= TB_GENERIC_LIST_BYTES) {
		w->result = off | TB_LIST_CUT;
		return 1;
	}
	off &= TB_GENERIC_LIST_BYTES - 1;
	__u64 room = TB_GENERIC_LIST_BYTES - off;
	/* room + 2: tells a string of exactly `room` bytes (kept whole,
	 * without its NUL) from a longer one (cut). */
	long n = bpf_probe_read_user_str(&s->buf[off], room + 2, str);
	if (n < 0) {
		w->result = off | TB_LIST_FAULT;
		return 1;
	}
	if ((__u64)n > room + 1) {
		w->result = (off + room) | TB_LIST_CUT;
		return 1;
	}
	s->list_len = off + ((__u64)n > room ? room : (__u64)n);
	return 0;
}

/*
 * Gathers the NULL-terminated array of user strings at `src` (argv, envp) in
 * the per-CPU scratch, each string followed by its NUL, at most
 * TB_GENERIC_LIST_STRS strings and TB_GENERIC_LIST_BYTES bytes (a string
 * crossing the limit is cut there). Returns the bytes gathered, | TB_LIST_CUT
 * if some were left out, | TB_LIST_FAULT if reading user memory failed. A
 * global function: the verifier checks it once, not once per call site.
 */
__noinline __u64 tb_gather_str_list(__u64 src)
{
	__u32 zero = 0;
	struct tb_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return TB_LIST_FAULT;
	s->list_len = 0;
	/* Ends by the NULL, or at string TB_GENERIC_LIST_STRS (a cut), at the latest. */
	struct tb_str_list_walk w = { .src = src, .s = s, .result = TB_LIST_CUT };
	bpf_loop(TB_GENERIC_LIST_STRS + 1, tb_str_list_step, &w, 0);
	return w.result;
}

/* The array of user strings at `src` into variable field `v` (see
 * tb_gather_str_list). */
static __always_inline void tb_copy_user_str_list(struct tb_ctx *t, struct tb_var *v, __u64 src)
{
	__u32 zero = 0;
	__u64 r = tb_gather_str_list(src);
	__u64 len = r & 0xffffffff;
	struct tb_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return;
	if (len > TB_GENERIC_LIST_BYTES)
		len = TB_GENERIC_LIST_BYTES;
	if (tb_var_start(t, v, len, TB_GENERIC_LIST_BYTES))
		tb_put(t, v, s->buf, len & (TB_SCRATCH_SIZE - 1), false);
	if (r & TB_LIST_CUT) {
		v->flags |= TB_VAR_TRUNCATED;
		v->size = 0; /* the whole array's size is not known */
		tb_count(TB_STAT_TRUNCATED);
	}
	if (r & TB_LIST_FAULT) {
		v->flags |= TB_VAR_FAULT;
		t->rec->flags |= TB_REC_PAYLOAD_LOST;
		tb_count(TB_STAT_FAULT);
	}
}

/* Marks variable field `v` as not selected for capture (`size` bytes). */
static __always_inline void tb_skip(struct tb_var *v, __u64 size)
{
	v->flags |= TB_VAR_NOT_CAPTURED;
	v->size = size;
}

/* Marks variable field `v` as having no bytes, for reason `why`
 * (TB_VAR_NULL_POINTER, TB_VAR_UNAVAILABLE). */
static __always_inline void tb_none(struct tb_var *v, __u32 why)
{
	v->flags |= why;
	v->size = 0;
}

#endif /* TB_BPF_COPY_H */
