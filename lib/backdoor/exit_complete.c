/*
 * Backdoor exits, completion: write what the guest must see for a decoded call (LB, HB,
 * hypercall, or the protocol's answer to an invalid request) into kvm_run or by ioctl.
 * Decoding: exit_decode.c; the protocol facts used: exit.h.
 */
#include "backdoor/exit.h"

#include <errno.h>
#include <string.h>

#define REPLY_REGS                                                                                         \
	(VMWKVM_REPLY_EAX | VMWKVM_REPLY_EBX | VMWKVM_REPLY_ECX | VMWKVM_REPLY_EDX | VMWKVM_REPLY_ESI |        \
	 VMWKVM_REPLY_EDI | VMWKVM_REPLY_EBP)
#define REPLY_ALL (REPLY_REGS | VMWKVM_REPLY_INJECT)

/* Zeroing by copying from this compiles to vector stores (see exit_decode.c). */
static const struct vmwkvm_reply zero_reply;

/* Exception vectors the library lets a VMM inject: architecturally defined, not NMI. */
static bool vector_injectable(uint32_t v)
{
	if (v > 31 || v == 2 || v == 15 || v == 31)
		return false;
	if (v >= 22 && v <= 27)
		return false;
	return true;
}


/* ------------------------------------------------------------------ completion */

/* The call must describe the exit that is in kvm_run now. */
static int check_call(const struct vmwkvm_vcpu *vcpu, const struct vmwkvm_call *call)
{
	const struct kvm_run *run = vcpu->run;
	if (call->exit_reason != run->exit_reason)
		return -EINVAL;
	switch (call->transport) {
	case VMWKVM_TRANSPORT_LB:
	case VMWKVM_TRANSPORT_HB: {
		if (run->exit_reason != KVM_EXIT_IO || run->io.port != call->port || run->io.size != call->io_size)
			return -EINVAL;
		uint32_t dir = run->io.direction == KVM_EXIT_IO_IN ? VMWKVM_DIR_IN : VMWKVM_DIR_OUT;
		if (call->invalid != VMWKVM_INVALID_DIRECTION && call->direction != dir)
			return -EINVAL;
		if ((call->transport == VMWKVM_TRANSPORT_HB) != (run->io.port == VMWKVM_BDOORHB_PORT))
			return -EINVAL;
		return 0;
	}
	case VMWKVM_TRANSPORT_HYPERCALL:
		if (vcpu->vm->hypercall_exit == 0 || run->exit_reason != vcpu->vm->hypercall_exit)
			return -EINVAL;
		return 0;
	default:
		return -EINVAL;
	}
}

/* Pointer to the exit's I/O data, or NULL when it lies outside the mapping. */
static uint8_t *io_data(struct vmwkvm_vcpu *vcpu, uint64_t *len)
{
	uint64_t off;
	if (!io_data_bounds(vcpu->run, vcpu->run_size, &off, len))
		return NULL;
	return (uint8_t *)vcpu->run + off;
}

static inline void put_reg(uint64_t *slot, uint32_t set, uint32_t bit, uint32_t v)
{
	if (set & bit)
		*slot = v; /* zero-extended */
}

/*
 * Write the registers in @p set (32-bit values, zero-extended) and, when @p rax_set, RAX
 * = @p rax. Sync mode: in place in kvm_run, marked dirty. Ioctl mode: the registers read
 * at decode (or read now) then KVM_SET_REGS. RIP and RFLAGS keep the values KVM reported.
 */
static int write_regs(struct vmwkvm_vcpu *vcpu, uint32_t set, const struct vmwkvm_reply *reply, bool rax_set,
		      uint64_t rax)
{
	struct vmwkvm_regs *r;
	struct kvm_regs *kr = NULL;
	if (vcpu->regs_mode == VMWKVM_REGS_SYNC) {
		kr = &vcpu->run->s.regs.regs;
		r = (struct vmwkvm_regs *)(void *)kr;
	} else {
		if (!vcpu->io_regs_valid) {
			struct kvm_regs tmp;
			int e = vk_ioctl(vcpu->fd, KVM_GET_REGS, &tmp);
			if (e < 0)
				return e;
			memcpy(&vcpu->io_regs, &tmp, sizeof(vcpu->io_regs));
			vcpu->io_regs_valid = true;
		}
		r = &vcpu->io_regs;
	}
	if (rax_set)
		r->rax = rax;
	if (reply) {
		put_reg(&r->rbx, set, VMWKVM_REPLY_EBX, reply->ebx);
		put_reg(&r->rcx, set, VMWKVM_REPLY_ECX, reply->ecx);
		put_reg(&r->rdx, set, VMWKVM_REPLY_EDX, reply->edx);
		put_reg(&r->rsi, set, VMWKVM_REPLY_ESI, reply->esi);
		put_reg(&r->rdi, set, VMWKVM_REPLY_EDI, reply->edi);
		put_reg(&r->rbp, set, VMWKVM_REPLY_EBP, reply->ebp);
	}
	if (kr) {
		vcpu->run->kvm_dirty_regs |= KVM_SYNC_X86_REGS;
		return 0;
	}
	return vk_vcpu_write_regs(vcpu, r);
}

static int complete_lb(struct vmwkvm_vcpu *vcpu, const struct vmwkvm_call *call, const struct vmwkvm_reply *reply)
{
	const uint32_t set = reply->set;
	const uint32_t eax = (set & VMWKVM_REPLY_EAX) ? reply->eax : (uint32_t)call->rax;
	if (call->direction == VMWKVM_DIR_IN) {
		/* the IN itself loads EAX from the data: always give it the answer (or the
		 * guest's own EAX when the reply leaves EAX alone) */
		uint64_t len;
		uint8_t *d = io_data(vcpu, &len);
		if (!d || len < 4)
			return -EINVAL;
		memcpy(d, &eax, 4);
		if (!(set & ~VMWKVM_REPLY_EAX))
			return 0;
		return write_regs(vcpu, set, reply, true, eax);
	}
	if (!set)
		return 0;
	return write_regs(vcpu, set, reply, (set & VMWKVM_REPLY_EAX) != 0, eax);
}

static int complete_hb(struct vmwkvm_vcpu *vcpu, const struct vmwkvm_call *call, const struct vmwkvm_reply *reply)
{
	const struct kvm_run *run = vcpu->run;
	if (run->io.count != call->hb_count)
		return -EINVAL;
	if (call->direction == VMWKVM_DIR_IN) {
		uint64_t len;
		uint8_t *d = io_data(vcpu, &len);
		if (!d)
			return -EINVAL;
		if (reply->hb_data) {
			/* the service may have written the bytes in place (hb_data == d) */
			if (reply->hb_data != (const void *)d)
				memmove(d, reply->hb_data, (size_t)len);
		}
		else
			memset(d, 0, (size_t)len);
	}
	if (!reply->set)
		return 0;
	return write_regs(vcpu, reply->set, reply, (reply->set & VMWKVM_REPLY_EAX) != 0, reply->eax);
}

static int complete_hypercall(struct vmwkvm_vcpu *vcpu, const struct vmwkvm_call *call,
			      const struct vmwkvm_reply *reply)
{
	struct vmwkvm_proposed_vmware_exit *x = vmwkvm_proposed_run_vmware(vcpu->run);
	const uint32_t set = reply->set;
	/* KVM writes `result` to RAX unconditionally: keep the guest's RAX unless asked */
	const uint64_t result = (set & VMWKVM_REPLY_EAX) ? (uint64_t)reply->eax : x->hcall.rax;
	(void)call;
	if (set & VMWKVM_REPLY_INJECT) {
		if (!vector_injectable(reply->vector))
			return -EINVAL;
	}
	if (set & (REPLY_REGS & ~VMWKVM_REPLY_EAX)) {
		int e = write_regs(vcpu, set, reply, true, result);
		if (e < 0)
			return e;
	}
	x->hcall.result = result;
	if (set & VMWKVM_REPLY_INJECT) {
		x->hcall.exception.inject = 1;
		x->hcall.exception.vector = reply->vector;
		x->hcall.exception.error_code = reply->error_code;
		x->hcall.exception.address = reply->address;
	} else {
		x->hcall.exception.inject = 0;
	}
	return 0;
}

static int complete_invalid(struct vmwkvm_vcpu *vcpu, const struct vmwkvm_call *call)
{
	switch (call->transport) {
	case VMWKVM_TRANSPORT_LB:
	case VMWKVM_TRANSPORT_HB: {
		uint64_t len;
		uint8_t *d = io_data(vcpu, &len);
		if (d && vcpu->run->io.direction == KVM_EXIT_IO_IN)
			memset(d, 0xFF, (size_t)len);
		if (call->transport == VMWKVM_TRANSPORT_LB || call->invalid == VMWKVM_INVALID_BOUNDS ||
		    call->invalid == VMWKVM_INVALID_SIZE || call->invalid == VMWKVM_INVALID_DIRECTION ||
		    call->invalid == VMWKVM_INVALID_STRING)
			return 0;
		if (!(call->hb_flags & VMWKVM_HB_LAST)) {
			/* discard the rest of this transfer */
			struct vmwkvm_hb_state *hb = &vcpu->hb;
			if (hb->total != 0 && !hb->rejected)
				hb->rejected = VMWKVM_INVALID_HB_ABANDONED;
			return 0;
		}
		if (!call->magic_ok)
			return 0;
		/* the transfer ends here: the guest reads the status in EBX bits 31:16; clear it
		 * (no SUCCESS) and keep the HB command in bits 15:0 */
		struct vmwkvm_reply st = zero_reply;
		st.set = VMWKVM_REPLY_EBX;
		st.ebx = (uint16_t)call->rbx;
		return write_regs(vcpu, st.set, &st, false, 0);
	}
	case VMWKVM_TRANSPORT_HYPERCALL: {
		if (call->invalid == VMWKVM_INVALID_HYPERCALL)
			return 0; /* unknown payload: nothing the library may write */
		struct vmwkvm_proposed_vmware_exit *x = vmwkvm_proposed_run_vmware(vcpu->run);
		if (call->magic_ok && (call->hypercall_flags & VMWKVM_HCALL_FLAG_HB)) {
			/* an HB request: the guest reads its status in EBX bits 31:16 (preloaded
			 * with SUCCESS); clear it and keep the HB command in bits 15:0 */
			struct vmwkvm_reply st = zero_reply;
			st.set = VMWKVM_REPLY_EBX;
			st.ebx = (uint16_t)call->rbx;
			int e = write_regs(vcpu, st.set, &st, true, 0xFFFFFFFFu);
			if (e < 0)
				return e;
		}
		x->hcall.result = 0xFFFFFFFFu;
		x->hcall.exception.inject = 0;
		return 0;
	}
	default:
		return -EINVAL;
	}
}

int vmwkvm_exit_complete(vmwkvm_vcpu *vcpu, const struct vmwkvm_call *call, const struct vmwkvm_reply *reply)
{
	if (!vcpu || !call || call->invalid != VMWKVM_INVALID_NONE)
		return -EINVAL;
	int r = check_call(vcpu, call);
	if (r < 0)
		return r;
	struct vmwkvm_reply unsupported;
	if (!reply) {
		if (call->transport == VMWKVM_TRANSPORT_HB ||
		    (call->transport == VMWKVM_TRANSPORT_HYPERCALL && (call->hypercall_flags & VMWKVM_HCALL_FLAG_HB))) {
			r = complete_invalid(vcpu, call);
			vcpu->io_regs_valid = false;
			return r;
		}
		unsupported = zero_reply;
		unsupported.set = VMWKVM_REPLY_EAX;
		unsupported.eax = 0xFFFFFFFFu;
		reply = &unsupported;
	}
	if (reply->set & ~(uint32_t)REPLY_ALL)
		return -EINVAL;
	if ((reply->set & VMWKVM_REPLY_INJECT) && call->transport != VMWKVM_TRANSPORT_HYPERCALL)
		return -EINVAL;
	switch (call->transport) {
	case VMWKVM_TRANSPORT_LB:
		r = complete_lb(vcpu, call, reply);
		break;
	case VMWKVM_TRANSPORT_HB:
		r = complete_hb(vcpu, call, reply);
		break;
	default:
		r = complete_hypercall(vcpu, call, reply);
		break;
	}
	vcpu->io_regs_valid = false;
	return r;
}

int vmwkvm_exit_complete_invalid(vmwkvm_vcpu *vcpu, const struct vmwkvm_call *call)
{
	if (!vcpu || !call)
		return -EINVAL;
	int r = check_call(vcpu, call);
	if (r < 0)
		return r;
	r = complete_invalid(vcpu, call);
	vcpu->io_regs_valid = false;
	return r;
}
