/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The current task's working directory as a path, for exec events' `cwd`.
 * bpf_d_path is not allowed in tracepoint programs, so the dentries of
 * task->fs->pwd are walked up to task->fs->root, crossing mounts the way the
 * kernel's d_path does (fs/d_path.c, prepend_path), and the path is built
 * backwards at the end of a region of the per-CPU scratch.
 *
 * Every pointer is read with a CO-RE helper read into a plain number, never
 * kept as a BTF pointer: struct mount is reached from the vfsmount by
 * subtracting its offset (container_of), which BTF pointers cannot do on 6.1
 * (no bpf_rdonly_cast), and numbers leave the verifier one simple state per
 * iteration of the walk.
 */
#ifndef TB_BPF_PATH_H
#define TB_BPF_PATH_H

#include "copy.h"

/*
 * Steps of the walk, each one path component or one mount crossed. A deeper
 * directory is delivered truncated (its deepest components). The steps are
 * bpf_loop iterations, so the bound costs nothing at verification (a plain
 * loop of 1024 steps took 520,000 verified instructions); at run time only
 * the real depth is walked (three kernel reads a component). With it, a path
 * of components of 3 bytes or more reaches TB_PATH_BYTES first.
 */
#define TB_PATH_MAX_STEPS 1024
/* Bytes of a path, built backwards so that it ends at scratch offset
 * TB_PATH_BYTES (a power of two, the mask of every write). */
#define TB_PATH_BYTES 4096
#define TB_NAME_MAX 255 /* NAME_MAX: a longer component is not trusted */

/* tb_gather_cwd's result: the path's start in the scratch, and flags. */
#define TB_PATH_CUT (1ull << 32)     /* only the deepest components fitted */
#define TB_PATH_FAULT (1ull << 33)   /* reading the kernel's structures failed */
#define TB_PATH_NO_FS (1ull << 34)   /* the task has no fs_struct (never at exec) */

/* " (deleted)" after a removed directory, as d_path writes it. Stored
 * character by character: a string constant would be a .rodata variable of
 * its own, which the kernel's BTF check rejects beside the object's
 * const volatile ones (and without BTF, bpf_loop cannot be used). */
#define TB_DELETED_LEN 10
static __always_inline void tb_path_deleted(char *dst)
{
	dst[0] = ' ', dst[1] = '(', dst[2] = 'd', dst[3] = 'e', dst[4] = 'l';
	dst[5] = 'e', dst[6] = 't', dst[7] = 'e', dst[8] = 'd', dst[9] = ')';
}

/* Prepends component `name` (`len` bytes) and its '/' to the path in the
 * scratch, whose start is s->path_pos. Returns false if it does not fit
 * (or is longer than NAME_MAX), TB_PATH_FAULT if it could not be read. */
static __always_inline __u64 tb_path_prepend(struct tb_scratch *s, const unsigned char *name, __u64 len)
{
	/* Read back from memory, not carried in a register: the verifier then
	 * sees the same state at every step (see tb_append). */
	__u64 pos = *(volatile __u64 *)&s->path_pos;
	if (len > TB_NAME_MAX || pos > TB_PATH_BYTES || len + 1 > pos)
		return TB_PATH_CUT;
	pos -= len;
	if (bpf_probe_read_kernel(&s->buf[pos & (TB_PATH_BYTES - 1)], len & TB_NAME_MAX, name))
		return TB_PATH_FAULT;
	pos -= 1;
	s->buf[pos & (TB_PATH_BYTES - 1)] = '/';
	s->path_pos = pos;
	return 0;
}

/* Is `dentry` unlinked (d_unlinked: unhashed and not a root)? */
static __always_inline bool tb_dentry_unlinked(struct dentry *dentry, __u64 parent)
{
	struct hlist_bl_node **pprev = NULL;
	bpf_core_read(&pprev, sizeof(pprev), &dentry->d_hash.pprev);
	return !pprev && (__u64)dentry != parent;
}

/* The walk's position, on the stack of tb_gather_cwd (bpf_loop's context). */
struct tb_path_walk {
	struct tb_scratch *s;
	__u64 dentry, vfsmnt, mnt_root; /* where the walk is */
	__u64 root_dentry, root_mnt;    /* where it stops: the task's root */
	__u64 mnt_off;                  /* offsetof(struct mount, mnt) */
	__u64 result;                   /* 0 while walking, then TB_PATH_* or TB_PATH_WHOLE */
};

#define TB_PATH_WHOLE (1ull << 35) /* the walk reached the root */

/* One step of the walk (a bpf_loop callback: the verifier checks it once,
 * whatever the number of steps): prepends one component, or crosses one
 * mount, as the kernel's prepend_path does. Returns 1 when the walk ends. */
static long tb_path_step(__u64 i, struct tb_path_walk *w)
{
	__u64 dentry = w->dentry, parent = 0, up = 0;
	struct dentry *d = (struct dentry *)dentry;
	struct qstr name;

	if (dentry == w->root_dentry && w->vfsmnt == w->root_mnt) {
		w->result = TB_PATH_WHOLE;
		return 1;
	}
	if (dentry == w->mnt_root) {
		/* The root of a mount: continue from where it is mounted. */
		struct mount *m = (struct mount *)(w->vfsmnt - w->mnt_off);
		if (bpf_core_read(&up, sizeof(up), &m->mnt_parent))
			goto fault;
		if (up == (__u64)m) { /* the namespace's (or a detached tree's) root */
			w->result = TB_PATH_WHOLE;
			return 1;
		}
		if (bpf_core_read(&w->dentry, sizeof(w->dentry), &m->mnt_mountpoint))
			goto fault;
		/* In a local: inside bpf_core_read, w->vfsmnt would be relocated
		 * as a kernel type's field. */
		struct vfsmount *vfsmnt = (struct vfsmount *)(up + w->mnt_off);
		w->vfsmnt = (__u64)vfsmnt;
		if (bpf_core_read(&w->mnt_root, sizeof(w->mnt_root), &vfsmnt->mnt_root))
			goto fault;
		return 0;
	}
	if (bpf_core_read(&parent, sizeof(parent), &d->d_parent) || bpf_core_read(&name, sizeof(name), &d->d_name))
		goto fault;
	if (dentry == parent) { /* a root that is not a mount's: the prefix is unknown */
		w->result = TB_PATH_CUT;
		return 1;
	}
	w->result = tb_path_prepend(w->s, name.name, name.len);
	w->dentry = parent;
	return w->result != 0;
fault:
	w->result = TB_PATH_FAULT;
	return 1;
}

/*
 * Builds the current task's working directory in the scratch, ending at
 * TB_PATH_BYTES. Returns its start | flags:
 *  - the absolute path, relative to the task's root (a chroot or a
 *    container's root), " (deleted)" appended if the directory was removed
 *    (as /proc/PID/cwd shows it);
 *  - TB_PATH_CUT: deeper than TB_PATH_MAX_STEPS steps or longer than
 *    TB_PATH_BYTES: the deepest whole components that fit, joined by '/',
 *    without a leading '/' (so never taken for an absolute path);
 *  - a directory outside the task's root (a chroot entered without chdir)
 *    or on a detached mount: the path from the root of its mount
 *    namespace, or of the detached tree (as d_path gives it);
 *  - TB_PATH_FAULT or TB_PATH_NO_FS: no path.
 * A global function: verified once, apart from the handler.
 */
__noinline __u64 tb_gather_cwd(void)
{
	__u32 zero = 0;
	struct tb_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return TB_PATH_FAULT;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fs_struct *fs = BPF_CORE_READ(task, fs);
	if (!fs)
		return TB_PATH_NO_FS;
	struct path pwd, root;
	if (bpf_core_read(&pwd, sizeof(pwd), &fs->pwd) || bpf_core_read(&root, sizeof(root), &fs->root))
		return TB_PATH_FAULT;

	struct tb_path_walk w = {
		.s = s,
		.dentry = (__u64)pwd.dentry,
		.vfsmnt = (__u64)pwd.mnt,
		.mnt_root = (__u64)BPF_CORE_READ(pwd.mnt, mnt_root),
		.root_dentry = (__u64)root.dentry,
		.root_mnt = (__u64)root.mnt,
		.mnt_off = bpf_core_field_offset(struct mount, mnt),
		.result = 0,
	};
	__u64 end = TB_PATH_BYTES;
	if (tb_dentry_unlinked(pwd.dentry, (__u64)BPF_CORE_READ(pwd.dentry, d_parent))) {
		end -= TB_DELETED_LEN;
		tb_path_deleted(&s->buf[TB_PATH_BYTES - TB_DELETED_LEN]);
	}
	s->path_pos = end;
	bpf_loop(TB_PATH_MAX_STEPS, tb_path_step, &w, 0);
	/* Out of steps right at the root: the path is whole (so the bound is
	 * TB_PATH_MAX_STEPS components and mounts, not one less). */
	if (!w.result && w.dentry == w.root_dentry && w.vfsmnt == w.root_mnt)
		w.result = TB_PATH_WHOLE;

	__u64 pos = *(volatile __u64 *)&s->path_pos;
	if (w.result == TB_PATH_FAULT)
		return TB_PATH_FAULT;
	if (w.result == TB_PATH_WHOLE) {
		if (pos == end) { /* the root itself */
			pos -= 1;
			s->buf[pos & (TB_PATH_BYTES - 1)] = '/';
		}
		return pos & (TB_PATH_BYTES - 1);
	}
	/* Cut (or out of steps): without the '/' before the deepest components
	 * kept. */
	if (pos >= end)
		return TB_PATH_FAULT; /* not even one component (never: one always fits) */
	return ((pos + 1) & (TB_PATH_BYTES - 1)) | TB_PATH_CUT;
}

/* The current task's working directory into variable field `v` (see
 * tb_gather_cwd); a cut is flagged and counted like any other, its original
 * size unknown. */
static __always_inline void tb_copy_cwd(struct tb_ctx *t, struct tb_var *v)
{
	__u32 zero = 0;
	__u64 r = tb_gather_cwd();
	struct tb_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return;
	if (r & TB_PATH_NO_FS) {
		tb_none(v, TB_VAR_UNAVAILABLE);
		return;
	}
	if (r & TB_PATH_FAULT) {
		v->flags |= TB_VAR_FAULT;
		t->rec->flags |= TB_REC_PAYLOAD_LOST;
		tb_count(TB_STAT_FAULT);
		return;
	}
	__u64 start = r & (TB_PATH_BYTES - 1);
	__u64 len = TB_PATH_BYTES - start;
	if (tb_var_start(t, v, len, TB_PATH_BYTES))
		tb_put_short(t, v, s->buf + start, len);
	if (r & TB_PATH_CUT) {
		v->flags |= TB_VAR_TRUNCATED;
		v->size = 0; /* the whole path's length is not known */
		tb_count(TB_STAT_TRUNCATED);
	}
}

#endif /* TB_BPF_PATH_H */
