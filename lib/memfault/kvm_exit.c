/*
 * Memory-fault dispatcher, KVM side: KVM_EXIT_MEMORY_FAULT (mainline and the proposed
 * forms under their dialects) and KVM_EXIT_MMIO exits that land in guest RAM.
 *
 * Everything read from kvm_run is copied once into locals and validated before use:
 * the access width of an MMIO exit must be 1..8; GPAs and sizes are clipped to guest RAM.
 */
#include "memfault/engine.h"
#include "memfault/protect.h"
#include "memfault/table.h"

#include <errno.h>
#include <string.h>

/* How much of [gpa, gpa+size) is covered by contiguous regions starting at gpa. */
static uint64_t ram_extent(const struct mf_table *t, uint64_t gpa, uint64_t size)
{
	uint64_t pos = gpa, end = gpa + size;
	if (end < gpa)
		end = UINT64_MAX;
	while (pos < end) {
		struct mf_region *r = vk_mf_region_by_gpa(t, pos);
		if (!r)
			break;
		pos = r->gpa + r->size;
		if (pos == 0) /* region ending at the top of the address space */
			return end - gpa;
	}
	return (pos < end ? pos : end) - gpa;
}

/* Unprotect, page by page, the protected pages of [gpa, gpa+len) that no piece asks to
 * keep protected. */
static int unprotect_span(struct vmwkvm_memfault *mf, const struct mf_table *t, const struct mf_fault *f,
			  uint64_t gpa, uint64_t len, bool honour_keep)
{
	uint64_t pos = gpa, end = gpa + len;
	while (pos < end) {
		struct mf_region *r = vk_mf_region_by_gpa(t, pos);
		if (!r)
			return -ERANGE;
		uint64_t ps = r->page_size;
		uint64_t page = pos & ~(ps - 1);
		if ((vk_mf_pst(r, page) & PST_PROT) && !(honour_keep && vk_mf_keep_protection(f, page, ps))) {
			int e = vk_mf_unprotect_region(mf, r, page, ps, false);
			if (e < 0)
				return e;
		}
		pos = page + ps;
	}
	return 0;
}

/* Write the FILL/ZERO pieces of f into RAM. */
static int apply_fills(struct vmwkvm_memfault *mf, const struct mf_table *t, const struct mf_fault *f)
{
	static const uint8_t zeros[256];
	for (size_t i = 0; i < f->npieces; i++) {
		const struct mf_piece *p = &f->pieces[i];
		if (p->kind != VMWKVM_MF_ACT_FILL && p->kind != VMWKVM_MF_ACT_ZERO)
			continue;
		struct mf_region *r = vk_mf_region_by_gpa(t, p->gpa);
		if (!r)
			return -ERANGE;
		for (uint64_t done = 0; done < p->size;) {
			uint64_t n = p->size - done;
			const void *src;
			if (p->kind == VMWKVM_MF_ACT_FILL) {
				src = (const uint8_t *)p->data + done;
			} else {
				n = n < sizeof(zeros) ? n : sizeof(zeros);
				src = zeros;
			}
			int e = vk_mf_ram_write(mf, r, p->gpa + done, src, n);
			if (e == -EOPNOTSUPP) {
				/* no way around the protection: lift it for this page, then write */
				uint64_t page = (p->gpa + done) & ~((uint64_t)r->page_size - 1);
				e = vk_mf_unprotect_region(mf, r, page, r->page_size, false);
				if (e == 0)
					e = vk_mf_ram_write(mf, r, p->gpa + done, src, n);
			}
			if (e < 0)
				return e;
			done += n;
		}
	}
	return 0;
}

/* Turn f into a failure with error e, keeping the record as it stands now for the caller. */
static void fail_fault(const struct vmwkvm_memfault *mf, const struct mf_table *t, struct mf_fault *f, int e)
{
	f->verdict = VMWKVM_MF_ACT_FAIL;
	f->error = e;
	vk_mf_fault_record(mf, t, f, &f->fail_rec);
	f->fail_rec.error = e;
}

/* The handlers' verdict was carried out with result e: handled, or a counted failure. */
static int applied(struct vmwkvm_memfault *mf, const struct mf_table *t, struct mf_fault *f, int e)
{
	if (e < 0) {
		fail_fault(mf, t, f, e);
		vk_mf_count(mf, ST_FAILURES, 1);
		return VMWKVM_MF_EXIT_FAILED;
	}
	return VMWKVM_MF_EXIT_HANDLED;
}

static int finish(const struct mf_fault *f, const struct mf_table *t, struct vmwkvm_memfault *mf,
		  struct vmwkvm_mf_record *rec, int result)
{
	if (rec) {
		if (result == VMWKVM_MF_EXIT_FAILED && f->verdict == VMWKVM_MF_ACT_FAIL)
			*rec = f->fail_rec;
		else
			vk_mf_fault_record(mf, t, f, rec);
		if (result == VMWKVM_MF_EXIT_FAILED && rec->error == 0)
			rec->error = f->error ? f->error : -EFAULT;
	}
	return result;
}

/* Clear the userfault bitmap bits of [gpa, gpa+len) (store-release: the data is in place). */
static void userfault_clear(const struct mf_table *t, uint64_t gpa, uint64_t len)
{
	uint64_t pos = gpa, end = gpa + len;
	while (pos < end) {
		struct mf_region *r = vk_mf_region_by_gpa(t, pos);
		if (!r)
			return;
		uint64_t rend = r->gpa + r->size < end ? r->gpa + r->size : end;
		if (r->uf_bitmap) {
			const unsigned bits = (unsigned)(8 * sizeof(unsigned long));
			for (uint64_t p = vk_mf_page_index(r, pos); p <= vk_mf_page_index(r, rend - 1); p++) {
				_Atomic unsigned long *w = (_Atomic unsigned long *)(void *)&r->uf_bitmap[p / bits];
				atomic_fetch_and_explicit(w, ~(1ul << (p % bits)), memory_order_release);
			}
		}
		pos = rend;
	}
}

/* The fault record of a KVM_EXIT_MEMORY_FAULT with these flags: which source (the
 * dialect's userfault or permission fault, or the mainline exit) and which access. */
static void memory_fault_init(const struct vmwkvm_memfault *mf, uint64_t flags, vmwkvm_vcpu *vcpu, struct mf_fault *f)
{
	memset(f, 0, sizeof(*f));
	f->raw_flags = flags;
	f->vcpu = vcpu;
	f->default_kind = VMWKVM_MF_ACT_UNPROTECT;
	if (flags & VMWKVM_UAPI_MEMORY_EXIT_FLAG_PRIVATE)
		f->flags |= VMWKVM_MF_FLAG_PRIVATE;
	uint64_t perm = mf->perm_read | mf->perm_write | mf->perm_exec;
	if ((mf->dialects & VMWKVM_MF_DIALECT_KVM_USERFAULT) && (flags & mf->userfault_flag)) {
		f->source = VMWKVM_MF_SRC_KVM_USERFAULT;
		f->access = VMWKVM_MF_ACCESS_MISSING;
		f->flags |= VMWKVM_MF_FLAG_UNPOPULATED;
	} else if ((mf->dialects & VMWKVM_MF_DIALECT_PERM_FAULT) && (flags & perm)) {
		f->source = VMWKVM_MF_SRC_PERM_FAULT;
		if (flags & mf->perm_read)
			f->access |= VMWKVM_MF_ACCESS_READ;
		if (flags & mf->perm_write)
			f->access |= VMWKVM_MF_ACCESS_WRITE;
		if (flags & mf->perm_exec)
			f->access |= VMWKVM_MF_ACCESS_EXEC;
	} else {
		f->source = VMWKVM_MF_SRC_MEMORY_FAULT_EXIT;
		f->access = VMWKVM_MF_ACCESS_READ | VMWKVM_MF_ACCESS_WRITE;
		f->flags |= VMWKVM_MF_FLAG_ACCESS_UNKNOWN;
	}
}

/* The span [gpa, gpa+covered) of guest RAM the fault covers: its bytes when the handlers
 * may read them, and whether it is protected. */
static void memory_fault_span(const struct mf_table *t, struct mf_fault *f, uint64_t gpa, uint64_t covered)
{
	f->gpa = f->fault_gpa = gpa;
	f->size = f->fault_size = covered;
	struct mf_region *r0 = vk_mf_region_by_gpa(t, gpa);
	if (r0->gpa + r0->size - gpa >= covered) {
		/* readable only if no page of the span is access-protected */
		bool readable = true;
		for (uint64_t p = vk_mf_page_index(r0, gpa); readable && p <= vk_mf_page_index(r0, gpa + covered - 1); p++)
			readable = !(atomic_load_explicit(&r0->pst[p], memory_order_acquire) & PST_ACC);
		if (readable)
			f->data = r0->hva + (gpa - r0->gpa);
	}
	if (f->source == VMWKVM_MF_SRC_KVM_USERFAULT)
		f->data = NULL; /* not populated yet: what is there is not the guest's data */
	if (vk_mf_pst(r0, gpa) & PST_PROT)
		f->flags |= VMWKVM_MF_FLAG_PROTECTED;
}

static int handle_memory_fault(struct vmwkvm_memfault *mf, struct kvm_run *run, vmwkvm_vcpu *vcpu,
			       struct vmwkvm_mf_record *rec)
{
	const struct vmwkvm_uapi_memory_fault *mfx = vmwkvm_uapi_run_memory_fault(run);
	uint64_t flags = mfx->flags, gpa = mfx->gpa, size = mfx->size;
	if (size == 0)
		size = 1;
	if (gpa + size < gpa)
		size = UINT64_MAX - gpa + 1;

	struct mf_fault f;
	memory_fault_init(mf, flags, vcpu, &f);
	atomic_fetch_add_explicit(&mf->faults[f.source], 1, memory_order_relaxed);

	struct mf_table *t = vk_mf_pin(mf);
	uint64_t covered = ram_extent(t, gpa, size);
	if (covered == 0) {
		vk_mf_unpin(mf, t);
		return VMWKVM_MF_EXIT_NOT_OURS;
	}
	if (covered < size)
		f.flags |= VMWKVM_MF_FLAG_TRUNCATED;
	memory_fault_span(t, &f, gpa, covered);

	int result;
	int e = vk_mf_run_handlers(mf, t, &f);
	if (e < 0)
		fail_fault(mf, t, &f, e);
	if (f.source == VMWKVM_MF_SRC_MEMORY_FAULT_EXIT && !f.any_handler && e == 0) {
		result = VMWKVM_MF_EXIT_NOT_OURS;
	} else if (f.verdict == VMWKVM_MF_ACT_RETRY) {
		result = VMWKVM_MF_EXIT_RETRY;
	} else if (f.verdict == VMWKVM_MF_ACT_FAIL) {
		result = VMWKVM_MF_EXIT_FAILED;
	} else {
		e = apply_fills(mf, t, &f);
		if (e == 0)
			e = unprotect_span(mf, t, &f, gpa, covered, false);
		if (e == 0 && f.source == VMWKVM_MF_SRC_KVM_USERFAULT)
			userfault_clear(t, gpa, covered);
		result = applied(mf, t, &f, e);
	}
	result = finish(&f, t, mf, rec, result);
	vk_mf_fault_fini(&f);
	vk_mf_unpin(mf, t);
	return result;
}

/* Read or write [gpa, gpa+len) of RAM (may span adjacent regions). */
static int ram_io(struct vmwkvm_memfault *mf, const struct mf_table *t, uint64_t gpa, uint8_t *buf, uint64_t len,
		  bool write)
{
	uint64_t pos = gpa, end = gpa + len;
	while (pos < end) {
		struct mf_region *r = vk_mf_region_by_gpa(t, pos);
		if (!r)
			return -ERANGE;
		uint64_t rend = r->gpa + r->size < end ? r->gpa + r->size : end;
		int e = write ? vk_mf_ram_write(mf, r, pos, buf + (pos - gpa), rend - pos)
			      : vk_mf_ram_read(mf, r, pos, buf + (pos - gpa), rend - pos);
		if (e == -EOPNOTSUPP) {
			/* cannot reach the bytes behind the protection: lift it for these pages */
			uint64_t ps = r->page_size;
			uint64_t p0 = pos & ~(ps - 1), p1 = (rend + ps - 1) & ~(ps - 1);
			vk_warn("memfault: GPA 0x%llx: no alias and no /proc/self/mem access: unprotecting to "
				"complete the access", (unsigned long long)pos);
			e = vk_mf_unprotect_region(mf, r, p0, p1 - p0, false);
			if (e == 0)
				e = write ? vk_mf_ram_write(mf, r, pos, buf + (pos - gpa), rend - pos)
					  : vk_mf_ram_read(mf, r, pos, buf + (pos - gpa), rend - pos);
		}
		if (e < 0)
			return e;
		pos = rend;
	}
	return 0;
}

/* Read [gpa, gpa+len) without lifting any protection; false if some byte is out of reach. */
static bool ram_io_peek_ok(struct vmwkvm_memfault *mf, const struct mf_table *t, uint64_t gpa, uint8_t *buf,
			   uint64_t len)
{
	for (uint64_t pos = gpa, end = gpa + len; pos < end;) {
		struct mf_region *r = vk_mf_region_by_gpa(t, pos);
		if (!r)
			return false;
		uint64_t rend = r->gpa + r->size < end ? r->gpa + r->size : end;
		if (vk_mf_ram_read(mf, r, pos, buf + (pos - gpa), rend - pos) < 0)
			return false;
		pos = rend;
	}
	return true;
}

/* The fault record of an MMIO exit on guest RAM. */
static void mmio_fault_init(struct mf_fault *f, uint64_t gpa, uint32_t len, bool is_write, vmwkvm_vcpu *vcpu)
{
	memset(f, 0, sizeof(*f));
	f->gpa = f->fault_gpa = gpa;
	f->size = f->fault_size = len;
	f->source = VMWKVM_MF_SRC_MMIO_ON_RAM;
	f->access = is_write ? VMWKVM_MF_ACCESS_WRITE : VMWKVM_MF_ACCESS_READ;
	f->vcpu = vcpu;
	f->raw_flags = is_write;
	f->default_kind = VMWKVM_MF_ACT_UNPROTECT;
}

/* Perform the guest's MMIO access (len <= 8 bytes at gpa) on RAM. */
static int mmio_perform(struct vmwkvm_memfault *mf, const struct mf_table *t, struct kvm_run *run, uint64_t gpa,
			uint32_t len, bool is_write)
{
	uint8_t buf[8];
	int e;
	if (is_write) {
		memcpy(buf, run->mmio.data, len);
		e = ram_io(mf, t, gpa, buf, len, true);
	} else {
		e = ram_io(mf, t, gpa, buf, len, false);
		if (e == 0)
			memcpy(run->mmio.data, buf, len);
	}
	return e;
}

static int handle_mmio(struct vmwkvm_memfault *mf, struct kvm_run *run, vmwkvm_vcpu *vcpu,
		       struct vmwkvm_mf_record *rec)
{
	uint64_t gpa = run->mmio.phys_addr;
	uint32_t len = run->mmio.len;
	bool is_write = run->mmio.is_write != 0;
	if (len == 0 || len > sizeof(run->mmio.data)) {
		vk_warn("memfault: MMIO exit with impossible length %u", len);
		return -EINVAL;
	}
	struct mf_table *t = vk_mf_pin(mf);
	if (!vk_mf_region_by_gpa(t, gpa)) {
		vk_mf_unpin(mf, t);
		return VMWKVM_MF_EXIT_NOT_OURS;
	}
	atomic_fetch_add_explicit(&mf->faults[VMWKVM_MF_SRC_MMIO_ON_RAM], 1, memory_order_relaxed);
	struct mf_fault f;
	mmio_fault_init(&f, gpa, len, is_write, vcpu);
	int result;
	if (ram_extent(t, gpa, len) < len) {
		/* the access leaves guest RAM: nothing sensible can be done on the host side */
		fail_fault(mf, t, &f, -ERANGE);
		vk_mf_count(mf, ST_FAILURES, 1);
		result = finish(&f, t, mf, rec, VMWKVM_MF_EXIT_FAILED);
		vk_mf_unpin(mf, t);
		return result;
	}
	for (uint64_t p = gpa; p < gpa + len; p++) {
		struct mf_region *r = vk_mf_region_by_gpa(t, p);
		if (vk_mf_pst(r, p) & PST_PROT)
			f.flags |= VMWKVM_MF_FLAG_PROTECTED;
	}
	/* the bytes as they are now, for the handler */
	uint8_t cur[8];
	if (ram_io_peek_ok(mf, t, gpa, cur, len))
		f.data = cur;

	int e = vk_mf_run_handlers(mf, t, &f);
	if (e < 0)
		fail_fault(mf, t, &f, e);
	if (f.verdict == VMWKVM_MF_ACT_RETRY) {
		result = VMWKVM_MF_EXIT_RETRY;
	} else if (f.verdict == VMWKVM_MF_ACT_FAIL) {
		result = VMWKVM_MF_EXIT_FAILED;
	} else {
		e = apply_fills(mf, t, &f);
		if (e == 0)
			e = unprotect_span(mf, t, &f, gpa, len, true);
		if (e == 0)
			e = mmio_perform(mf, t, run, gpa, len, is_write);
		result = applied(mf, t, &f, e);
	}
	result = finish(&f, t, mf, rec, result);
	vk_mf_fault_fini(&f);
	vk_mf_unpin(mf, t);
	return result;
}

int vmwkvm_memfault_handle_run(vmwkvm_memfault *mf, struct kvm_run *run, size_t run_size, int run_result,
			       vmwkvm_vcpu *vcpu, struct vmwkvm_mf_record *rec)
{
	if (!mf || !run || run_size < sizeof(struct kvm_run))
		return -EINVAL;
	if (rec)
		memset(rec, 0, sizeof(*rec));
	uint32_t reason = run->exit_reason;
	bool memfault_result = run_result == VMWKVM_RUN_MEMORY_FAULT || run_result == -EFAULT ||
			       run_result == -EHWPOISON;
	if (memfault_result && reason == VMWKVM_UAPI_EXIT_MEMORY_FAULT)
		return handle_memory_fault(mf, run, vcpu, rec);
	if (run_result == 0 && reason == KVM_EXIT_MMIO)
		return handle_mmio(mf, run, vcpu, rec);
	return VMWKVM_MF_EXIT_NOT_OURS;
}

int vmwkvm_memfault_handle_exit(vmwkvm_memfault *mf, vmwkvm_vcpu *vcpu, int run_result, struct vmwkvm_mf_record *rec)
{
	if (!mf || !vcpu)
		return -EINVAL;
	return vmwkvm_memfault_handle_run(mf, vcpu->run, vcpu->run_size, run_result, vcpu, rec);
}
