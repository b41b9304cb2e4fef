/* kvm_guest: host side of the backdoor test guests (see kvm_guest.h). */
#include "kvm_guest.h"

#include "core/internal.h"
#include "core/sys.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int bd_vm_up(struct bd_vm *b, const char *name, bool prot32, int regs_mode)
{
	memset(b, 0, sizeof(*b));
	int r = kvmh_vm_create(&b->h, NULL);
	if (r < 0)
		return r;
	r = kvmh_load_guest(&b->h, name, BD_ENTRY);
	if (r < 0)
		goto fail;
	struct vmwkvm_vm_opts vo;
	memset(&vo, 0, sizeof(vo));
	vo.sz = sizeof(vo);
	vo.kvm_fd = b->h.kvm_fd;
	vo.kvm_fd_set = 1;
	r = vmwkvm_vm_new(b->h.vm_fd, &vo, &b->vm);
	if (r < 0)
		goto fail;
	int fd = vmwkvm_vm_create_vcpu(b->vm, 0);
	if (fd < 0) {
		r = fd;
		goto fail;
	}
	r = kvmh_vcpu_attach(&b->h, fd);
	if (r < 0) {
		close(fd);
		goto fail;
	}
	struct vmwkvm_vcpu_opts o;
	memset(&o, 0, sizeof(o));
	o.sz = sizeof(o);
	o.regs_mode = regs_mode;
	r = vmwkvm_vcpu_new(b->vm, fd, b->h.run, b->h.run_size, &o, &b->vcpu);
	if (r < 0)
		goto fail;
	r = prot32 ? kvmh_setup_flat32(&b->h, BD_ENTRY) : kvmh_setup_real_mode(&b->h, BD_ENTRY);
	if (r < 0)
		goto fail;
	return 0;
fail:
	bd_vm_down(b);
	return r;
}

void bd_vm_down(struct bd_vm *b)
{
	vmwkvm_vcpu_free(b->vcpu);
	vmwkvm_vm_free(b->vm);
	b->vcpu = NULL;
	b->vm = NULL;
	if (b->h.live)
		kvmh_destroy(&b->h);
}

const struct bd_lb_expect bd_lb_pass[BD_LB_CALLS_PER_PASS] = {
	{ 10, VMWKVM_DIR_IN, 0 },
	{ 10, VMWKVM_DIR_OUT, 0 },
	{ BD_TEST_CMD, VMWKVM_DIR_IN, 0 },
	{ 0x0FFF, VMWKVM_DIR_IN, 0 },
	{ 0x010A, VMWKVM_DIR_IN, 0 },
	{ 10, VMWKVM_DIR_IN, VMWKVM_INVALID_MAGIC },
	{ 10, VMWKVM_DIR_IN, VMWKVM_INVALID_SIZE },
};

uint8_t bd_expected_origin(const struct bd_vm *b)
{
	return b->vm->cap_guest_mode > 0 ? VMWKVM_ORIGIN_L1 : VMWKVM_ORIGIN_UNKNOWN;
}

uint8_t bd_pattern(uint64_t i, unsigned seed)
{
	uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ (uint64_t)seed * 0xBF58476D1CE4E5B9ull;
	x ^= x >> 29;
	return (uint8_t)(x ^ (x >> 8) ^ (i >> 12));
}

void bd_set_params(struct bd_vm *b, uint32_t out_len, const uint8_t *in_src, uint32_t in_len)
{
	uint8_t *p = kvmh_gpa(&b->h, BD_PARAM_OUT_LEN, 0x20);
	if (!p)
		return;
	memcpy(p, &out_len, 4);
	memcpy(p + (BD_PARAM_IN_LEN - BD_PARAM_OUT_LEN), &in_len, 4);
	p[BD_PARAM_IN_FIRST - BD_PARAM_OUT_LEN] = in_len ? in_src[0] : 0;
	p[BD_PARAM_IN_LAST - BD_PARAM_OUT_LEN] = in_len ? in_src[in_len - 1] : 0;
}

uint32_t bd_peek32(struct bd_vm *b, uint64_t gpa)
{
	const uint8_t *p = kvmh_gpa(&b->h, gpa, 4);
	uint32_t v = 0xFFFFFFFFu;
	if (p)
		memcpy(&v, p, 4);
	return v;
}

int bd_server_init(struct bd_server *s, struct bd_vm *b, const uint8_t *in_src, uint64_t in_len)
{
	memset(s, 0, sizeof(*s));
	s->vcpu = b->vcpu;
	s->out_buf = calloc(1, BD_HB_MAX_LEN);
	if (!s->out_buf)
		return -ENOMEM;
	s->in_src = in_src;
	s->in_len = in_len;
	return 0;
}

void bd_server_fini(struct bd_server *s)
{
	free(s->out_buf);
	s->out_buf = NULL;
}

static void record(struct bd_server *s, const struct vmwkvm_call *c)
{
	if (s->nrec >= sizeof(s->recs) / sizeof(s->recs[0]))
		return;
	struct bd_rec *r = &s->recs[s->nrec++];
	r->command = c->command;
	r->transport = (uint8_t)c->transport;
	r->direction = (uint8_t)c->direction;
	r->cpl = c->cpl;
	r->mode = c->mode;
	r->origin = c->origin;
	r->invalid = (uint8_t)c->invalid;
	r->hb_flags = c->hb_flags;
	r->hb_total = c->hb_total;
}

__attribute__((format(printf, 3, 4))) static int fail(struct bd_server *s, int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->err, sizeof(s->err), fmt, ap);
	va_end(ap);
	return err;
}

static int serve_lb(struct bd_server *s, const struct vmwkvm_call *c)
{
	struct vmwkvm_reply r;
	memset(&r, 0, sizeof(r));
	switch (c->command) {
	case 10: /* GETVERSION */
		r.set = VMWKVM_REPLY_EAX | VMWKVM_REPLY_EBX | VMWKVM_REPLY_ECX;
		r.eax = 6;
		r.ebx = VMWKVM_BDOOR_MAGIC;
		r.ecx = 2;
		return vmwkvm_exit_complete(s->vcpu, c, &r);
	case BD_TEST_CMD:
		r.set = VMWKVM_REPLY_EAX | VMWKVM_REPLY_EBX | VMWKVM_REPLY_ECX | VMWKVM_REPLY_EDX | VMWKVM_REPLY_ESI |
			VMWKVM_REPLY_EDI;
		r.eax = 0x11111111, r.ebx = 0x22222222, r.ecx = 0x33333333;
		r.edx = 0x44444444, r.esi = 0x55555555, r.edi = 0x66666666;
		return vmwkvm_exit_complete(s->vcpu, c, &r);
	default:
		return vmwkvm_exit_complete(s->vcpu, c, NULL);
	}
}

static int serve_hb(struct bd_server *s, const struct vmwkvm_call *c)
{
	struct vmwkvm_reply r;
	memset(&r, 0, sizeof(r));
	if (c->hb_offset > BD_HB_MAX_LEN || c->hb_count > BD_HB_MAX_LEN - c->hb_offset)
		return fail(s, -ERANGE, "HB piece beyond the largest test transfer: offset %llu count %llu",
			    (unsigned long long)c->hb_offset, (unsigned long long)c->hb_count);
	if (c->direction == VMWKVM_DIR_OUT) {
		if (c->hb_flags & VMWKVM_HB_FIRST) {
			s->out_transfers++;
			s->out_total = c->hb_total;
		}
		memcpy(s->out_buf + c->hb_offset, c->hb_data, c->hb_count);
		s->out_got += c->hb_count;
		s->out_pieces++;
	} else {
		if (c->hb_flags & VMWKVM_HB_FIRST) {
			s->in_transfers++;
			if (c->hb_total != s->in_len)
				return fail(s, -EPROTO, "HB receive of %llu bytes, the test expected %llu",
					    (unsigned long long)c->hb_total, (unsigned long long)s->in_len);
		}
		if (c->hb_offset + c->hb_count > s->in_len)
			return fail(s, -EPROTO, "HB receive piece ends at %llu, beyond %llu",
				    (unsigned long long)(c->hb_offset + c->hb_count), (unsigned long long)s->in_len);
		r.hb_data = s->in_src + c->hb_offset;
		s->in_given += c->hb_count;
		s->in_pieces++;
		if (c->hb_count > s->in_max_piece)
			s->in_max_piece = c->hb_count;
	}
	if (c->hb_flags & VMWKVM_HB_LAST) {
		r.set = VMWKVM_REPLY_EBX;
		r.ebx = 0x00010000; /* HB command MESSAGE (0), status SUCCESS */
	}
	return vmwkvm_exit_complete(s->vcpu, c, &r);
}

int bd_serve(struct bd_vm *b, struct bd_server *s, unsigned max_exits)
{
	struct kvm_run *run = b->h.run;
	for (unsigned n = 0; n < max_exits; n++) {
		int r = vmwkvm_vcpu_run(s->vcpu);
		if (r == -EINTR) {
			if (kvmh_watchdog_fired())
				return fail(s, -ETIMEDOUT, "watchdog fired after %u exits", s->n_exits);
			continue;
		}
		if (r < 0)
			return fail(s, r, "KVM_RUN failed: %s", strerror(-r));
		if (run->exit_reason == KVM_EXIT_INTR)
			continue;
		s->n_exits++;
		struct vmwkvm_call c;
		int d = vmwkvm_exit_decode(s->vcpu, &c);
		if (d < 0)
			return fail(s, d, "vmwkvm_exit_decode: %s", strerror(-d));
		if (d == VMWKVM_EXIT_NOT_BACKDOOR) {
			if (run->exit_reason == KVM_EXIT_IO && run->io.direction == KVM_EXIT_IO_OUT && run->io.size == 4 &&
			    (run->io.port == BD_PORT_DONE || run->io.port == BD_PORT_FAIL)) {
				uint32_t v = 0;
				void *data = kvmh_io_data(&b->h);
				if (data)
					memcpy(&v, data, 4);
				if (run->io.port == BD_PORT_DONE && v == BD_DONE_CODE)
					return 0;
				s->fail_code = v;
				return 1;
			}
			char buf[160];
			kvmh_describe_exit(&b->h, buf, sizeof(buf));
			snprintf(s->err, sizeof(s->err), "unexpected exit after %u exits: %s", s->n_exits, buf);
			return -EPROTO;
		}
		if (d == VMWKVM_EXIT_INVALID) {
			s->n_invalid++;
			if (c.transport == VMWKVM_TRANSPORT_LB || (c.hb_flags & VMWKVM_HB_FIRST))
				record(s, &c);
			r = vmwkvm_exit_complete_invalid(s->vcpu, &c);
		} else if (c.transport == VMWKVM_TRANSPORT_LB) {
			record(s, &c);
			r = serve_lb(s, &c);
		} else if (c.transport == VMWKVM_TRANSPORT_HB) {
			if (c.hb_flags & VMWKVM_HB_FIRST)
				record(s, &c);
			r = serve_hb(s, &c);
		} else {
			return fail(s, -EPROTO, "unexpected transport %u", c.transport);
		}
		if (r < 0) {
			if (!s->err[0])
				snprintf(s->err, sizeof(s->err), "completion failed: %d", r);
			return r;
		}
	}
	return fail(s, -ETIMEDOUT, "no report after %u exits", max_exits);
}

/* ------------------------------------------------------------------ ioctl counting */

static struct bd_ioctl_counts counts;
static struct vmwkvm_sys_ops counting_ops;

static int counting_ioctl(void *ctx, int fd, unsigned long req, void *arg)
{
	switch (req) {
	case KVM_RUN: counts.run++; break;
	case KVM_GET_REGS: counts.get_regs++; break;
	case KVM_SET_REGS: counts.set_regs++; break;
	case KVM_GET_SREGS: counts.get_sregs++; break;
	default: counts.other++; break;
	}
	const struct vmwkvm_sys_ops *d = vmwkvm_sys_default_ops();
	(void)ctx;
	return d->ioctl(d->ctx, fd, req, arg);
}

void bd_count_install(void)
{
	counting_ops = *vmwkvm_sys_default_ops();
	counting_ops.ioctl = counting_ioctl;
	memset(&counts, 0, sizeof(counts));
	vmwkvm_sys_set_ops(&counting_ops);
}

void bd_count_reset(void)
{
	memset(&counts, 0, sizeof(counts));
}

void bd_count_get(struct bd_ioctl_counts *out)
{
	*out = counts;
}

void bd_count_uninstall(void)
{
	vmwkvm_sys_set_ops(NULL);
}

int bd_serve_counted(struct bd_vm *b, struct bd_server *s, unsigned max_exits, unsigned watchdog_s,
		     struct bd_ioctl_counts *ioc)
{
	bd_count_install();
	kvmh_watchdog_arm(watchdog_s);
	int r = bd_serve(b, s, max_exits);
	kvmh_watchdog_disarm();
	bd_count_get(ioc);
	bd_count_uninstall();
	return r;
}
