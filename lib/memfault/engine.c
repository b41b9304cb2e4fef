/*
 * Memory-fault dispatcher: the dispatch engine shared by every fault source. It runs the
 * handlers of the ranges a fault touches, splits the fault into resolved pieces and builds
 * the fault records. It changes no protection and makes no system call.
 */
#include "memfault/engine.h"

#include "memfault/table.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ dispatch engine */

static int push_piece(struct mf_fault *f, const struct mf_piece *p)
{
	if (!f->pieces) {
		f->pieces = f->inl;
		f->cappieces = MF_MAX_INLINE_PIECES;
	}
	if (f->npieces == f->cappieces) {
		size_t cap = f->cappieces * 2;
		struct mf_piece *n = malloc(cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		memcpy(n, f->pieces, f->npieces * sizeof(*n));
		if (f->pieces != f->inl)
			free(f->pieces);
		f->pieces = n;
		f->cappieces = cap;
	}
	f->pieces[f->npieces++] = *p;
	return 0;
}

void vk_mf_fault_fini(struct mf_fault *f)
{
	if (f->pieces && f->pieces != f->inl)
		free(f->pieces);
	f->pieces = NULL;
	f->npieces = f->cappieces = 0;
}

static void fill_record(const struct mf_table *t, const struct mf_fault *f, uint64_t gpa, uint64_t size,
			struct vmwkvm_mf_record *rec)
{
	memset(rec, 0, sizeof(*rec));
	rec->gpa = gpa;
	rec->size = size;
	rec->fault_gpa = f->fault_gpa;
	rec->fault_size = f->fault_size;
	struct mf_region *r = vk_mf_region_by_gpa(t, gpa);
	if (r) {
		rec->host = r->hva + (gpa - r->gpa);
		rec->region_gpa = r->gpa;
	}
	rec->data = f->data ? f->data + (gpa - f->gpa) : NULL;
	rec->access = f->access;
	rec->source = f->source;
	rec->flags = f->flags;
	rec->tid = f->tid;
	rec->vcpu = f->vcpu;
	rec->raw_flags = f->raw_flags;
}

void vk_mf_fault_record(const struct vmwkvm_memfault *mf, const struct mf_table *t, const struct mf_fault *f,
			struct vmwkvm_mf_record *rec)
{
	(void)mf;
	fill_record(t, f, f->gpa, f->size, rec);
}

static void note_fail(struct mf_fault *f, const struct mf_table *t, uint64_t gpa, uint64_t size, int error)
{
	if (f->verdict != VMWKVM_MF_ACT_FAIL) {
		f->verdict = VMWKVM_MF_ACT_FAIL;
		f->error = error;
		fill_record(t, f, gpa, size, &f->fail_rec);
		f->fail_rec.error = error;
	}
}

static int take_kind(struct vmwkvm_memfault *mf, struct mf_fault *f, const struct mf_table *t, uint64_t gpa,
		     uint64_t size, uint32_t kind, const void *data, int error, bool handled)
{
	switch (kind) {
	case VMWKVM_MF_ACT_RETRY:
		vk_mf_count(mf, ST_RETRIES, 1);
		if (f->verdict == MF_VERDICT_RESOLVE)
			f->verdict = VMWKVM_MF_ACT_RETRY;
		return 0;
	case VMWKVM_MF_ACT_FAIL:
		vk_mf_count(mf, ST_FAILURES, 1);
		note_fail(f, t, gpa, size, error < 0 ? error : -EFAULT);
		return 0;
	case VMWKVM_MF_ACT_UNPROTECT:
	case VMWKVM_MF_ACT_ZERO:
	case VMWKVM_MF_ACT_ALLOW_ONCE:
	case VMWKVM_MF_ACT_FILL: {
		struct mf_piece p = { .gpa = gpa, .size = size, .kind = kind, .data = data, .handled = handled };
		return push_piece(f, &p);
	}
	default:
		vk_warn("memfault: handler answered unknown action %u for GPA 0x%llx", kind, (unsigned long long)gpa);
		vk_mf_count(mf, ST_FAILURES, 1);
		note_fail(f, t, gpa, size, -EINVAL);
		return 0;
	}
}

static uint32_t unhandled_kind(const struct vmwkvm_memfault *mf, const struct mf_fault *f)
{
	if (f->access == VMWKVM_MF_ACCESS_REMOVE)
		return VMWKVM_MF_ACT_UNPROTECT; /* notifications: nothing to do */
	if (mf->default_action != VMWKVM_MF_ACT_DEFAULT)
		return mf->default_action;
	return f->default_kind;
}

int vk_mf_run_handlers(struct vmwkvm_memfault *mf, struct mf_table *t, struct mf_fault *f)
{
	f->verdict = MF_VERDICT_RESOLVE;
	f->error = 0;
	f->any_handler = false;
	uint64_t pos = f->gpa, end = f->gpa + f->size;
	size_t i = vk_mf_range_lower(t, pos);
	while (pos < end) {
		uint64_t pend;
		const struct mf_range *rg = NULL;
		if (i < t->nrange && t->ranges[i].gpa <= pos) {
			rg = &t->ranges[i];
			uint64_t rend = rg->gpa + rg->size;
			pend = rend < end ? rend : end;
		} else {
			pend = (i < t->nrange && t->ranges[i].gpa < end) ? t->ranges[i].gpa : end;
		}
		/* a record never spans two regions (its host pointer belongs to one) */
		struct mf_region *reg = vk_mf_region_by_gpa(t, pos);
		if (reg && reg->gpa + reg->size < pend)
			pend = reg->gpa + reg->size;
		int e;
		if (rg && (rg->access & f->access)) {
			struct vmwkvm_mf_record rec;
			fill_record(t, f, pos, pend - pos, &rec);
			struct vmwkvm_mf_action act = { .kind = unhandled_kind(mf, f) };
			if (f->access == VMWKVM_MF_ACCESS_REMOVE)
				act.kind = VMWKVM_MF_ACT_UNPROTECT;
			uint32_t def = act.kind;
			vk_mf_count(mf, ST_HANDLER_CALLS, 1);
			f->any_handler = true;
			int r = rg->fn(mf, &rec, &act, rg->ctx);
			uint32_t kind = r < 0 ? (uint32_t)VMWKVM_MF_ACT_FAIL : act.kind;
			if (kind == VMWKVM_MF_ACT_DEFAULT)
				kind = def;
			int error = r < 0 ? r : act.error;
			if (kind == VMWKVM_MF_ACT_FILL && !act.data) {
				vk_warn("memfault: handler answered FILL without data for GPA 0x%llx", (unsigned long long)pos);
				kind = VMWKVM_MF_ACT_FAIL;
				error = -EINVAL;
			}
			if (f->access == VMWKVM_MF_ACCESS_REMOVE)
				kind = VMWKVM_MF_ACT_UNPROTECT; /* the answer to a notification is ignored */
			e = take_kind(mf, f, t, pos, pend - pos, kind, act.data, error, true);
		} else {
			if (f->access != VMWKVM_MF_ACCESS_REMOVE)
				vk_mf_count(mf, ST_UNHANDLED, 1);
			e = take_kind(mf, f, t, pos, pend - pos, unhandled_kind(mf, f), NULL, -EFAULT, false);
		}
		if (e < 0)
			return e;
		if (rg && pend == rg->gpa + rg->size)
			i++;
		pos = pend;
	}
	return 0;
}

bool vk_mf_keep_protection(const struct mf_fault *f, uint64_t gpa, uint64_t len)
{
	bool any = false;
	for (size_t i = 0; i < f->npieces; i++) {
		const struct mf_piece *p = &f->pieces[i];
		if (p->gpa >= gpa + len || p->gpa + p->size <= gpa)
			continue;
		any = true;
		if (p->kind != VMWKVM_MF_ACT_ALLOW_ONCE)
			return false;
	}
	return any;
}

