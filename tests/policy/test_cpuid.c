/* VMware CPUID leaves (lib/policy/cpuid.c): pure editing of a kvm_cpuid_entry2 array. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <linux/kvm.h>

#include "core/internal.h"

#define VMW_EBX 0x61774d56u
#define VMW_ECX 0x4d566572u
#define VMW_EDX 0x65726177u
#define KVM_EBX 0x4b4d564bu
#define KVM_ECX 0x564b4d56u
#define KVM_EDX 0x0000004du

static struct kvm_cpuid_entry2 ent(uint32_t f, uint32_t idx, uint32_t a, uint32_t b, uint32_t c, uint32_t d)
{
	struct kvm_cpuid_entry2 e;
	memset(&e, 0, sizeof(e));
	e.function = f;
	e.index = idx;
	e.eax = a;
	e.ebx = b;
	e.ecx = c;
	e.edx = d;
	return e;
}

/* What KVM_GET_SUPPORTED_CPUID typically gives: basic leaves, KVM's PV leaves, extended. */
static uint32_t typical(struct kvm_cpuid_entry2 *a)
{
	uint32_t n = 0;
	a[n++] = ent(0, 0, 0xd, 0x756e6547, 0x6c65746e, 0x49656e69);
	a[n++] = ent(1, 0, 0x806ec, 0x00100800, 0x7ffafbbf, 0xbfebfbff);
	a[n++] = ent(7, 0, 0, 0x029c6fbf, 0, 0);
	a[n++] = ent(0x40000000, 0, 0x40000001, KVM_EBX, KVM_ECX, KVM_EDX);
	a[n++] = ent(0x40000001, 0, 0x01007afb, 0, 0, 0);
	a[n++] = ent(0x80000000, 0, 0x80000008, 0, 0, 0);
	return n;
}

static const struct kvm_cpuid_entry2 *find(const struct kvm_cpuid_entry2 *a, int n, uint32_t f, int *count)
{
	const struct kvm_cpuid_entry2 *hit = NULL;
	int c = 0;
	for (int i = 0; i < n; i++)
		if (a[i].function == f) {
			if (!hit)
				hit = &a[i];
			c++;
		}
	if (count)
		*count = c;
	return hit;
}

static struct vmwkvm_cpuid_opts opts_tsc(uint32_t tsc)
{
	struct vmwkvm_cpuid_opts o;
	memset(&o, 0, sizeof(o));
	o.sz = sizeof(o);
	o.tsc_khz = tsc;
	return o;
}

START_TEST(typical_array)
{
	struct kvm_cpuid_entry2 a[16];
	memset(a, 0, sizeof(a));
	uint32_t n = typical(a);
	struct kvm_cpuid_entry2 before[16];
	memcpy(before, a, sizeof(a));
	struct vmwkvm_cpuid_opts o = opts_tsc(2893000);
	int r = vmwkvm_cpuid_vmware(NULL, a, n, 16, &o);
	ck_assert_int_eq(r, 6); /* 6 - 2 KVM leaves + 2 VMware leaves */
	int c;
	const struct kvm_cpuid_entry2 *l1 = find(a, r, 1, &c);
	ck_assert_int_eq(c, 1);
	ck_assert_uint_eq(l1->ecx, 0x7ffafbbfu | 0x80000000u);
	ck_assert_uint_eq(l1->eax, 0x806ec); /* nothing else changed */
	ck_assert_uint_eq(l1->edx, 0xbfebfbff);
	const struct kvm_cpuid_entry2 *v = find(a, r, 0x40000000, &c);
	ck_assert_int_eq(c, 1);
	ck_assert_uint_eq(v->eax, 0x40000010);
	ck_assert_uint_eq(v->ebx, VMW_EBX);
	ck_assert_uint_eq(v->ecx, VMW_ECX);
	ck_assert_uint_eq(v->edx, VMW_EDX);
	char vendor[13];
	memcpy(vendor, &v->ebx, 4);
	memcpy(vendor + 4, &v->ecx, 4);
	memcpy(vendor + 8, &v->edx, 4);
	vendor[12] = '\0';
	ck_assert_str_eq(vendor, "VMwareVMware");
	ck_assert_uint_eq(v->index, 0);
	ck_assert_uint_eq(v->flags, 0);
	const struct kvm_cpuid_entry2 *i = find(a, r, 0x40000010, &c);
	ck_assert_int_eq(c, 1);
	ck_assert_uint_eq(i->eax, 2893000); /* kHz, not Hz */
	ck_assert_uint_eq(i->ebx, 1000000); /* APIC bus 1 GHz, in kHz */
	ck_assert_uint_eq(i->ecx, 0);       /* no VM, no confirmed hypercalls: the port */
	ck_assert_uint_eq(i->edx, 0);
	/* KVM's leaves are gone; other leaves unchanged, in order */
	ck_assert_ptr_null(find(a, r, 0x40000001, NULL));
	for (int k = 0; k < r; k++)
		ck_assert(!(a[k].ebx == KVM_EBX && a[k].ecx == KVM_ECX));
	ck_assert_mem_eq(&a[0], &before[0], sizeof(a[0]));
	ck_assert_mem_eq(&a[2], &before[2], sizeof(a[0]));
	ck_assert_mem_eq(&a[3], &before[5], sizeof(a[0]));
	/* entries past the result are untouched */
	ck_assert_mem_eq(&a[6], &before[6], sizeof(a[0]) * 10);
}
END_TEST

START_TEST(array_too_small_unchanged)
{
	struct kvm_cpuid_entry2 a[4], before[4];
	memset(a, 0, sizeof(a));
	a[0] = ent(0, 0, 0xd, 1, 2, 3);
	a[1] = ent(1, 0, 0x806ec, 0, 0x1, 0);
	a[2] = ent(7, 0, 0, 5, 0, 0);
	memcpy(before, a, sizeof(a));
	struct vmwkvm_cpuid_opts o = opts_tsc(1000000);
	ck_assert_int_eq(vmwkvm_cpuid_vmware(NULL, a, 3, 4, &o), -ENOSPC); /* needs 5 */
	ck_assert_mem_eq(a, before, sizeof(a));
	ck_assert_int_eq(vmwkvm_cpuid_vmware(NULL, a, 3, 3, &o), -ENOSPC);
	ck_assert_mem_eq(a, before, sizeof(a));
	/* exactly enough */
	struct kvm_cpuid_entry2 b[5];
	memset(b, 0, sizeof(b));
	memcpy(b, before, 3 * sizeof(b[0]));
	ck_assert_int_eq(vmwkvm_cpuid_vmware(NULL, b, 3, 5, &o), 5);
	/* replacing KVM's two leaves needs no extra room */
	struct kvm_cpuid_entry2 c[6];
	uint32_t n = typical(c);
	ck_assert_int_eq(vmwkvm_cpuid_vmware(NULL, c, n, n, &o), 6);
}
END_TEST

START_TEST(duplicates_and_idempotence)
{
	struct kvm_cpuid_entry2 a[16];
	memset(a, 0, sizeof(a));
	uint32_t n = 0;
	a[n++] = ent(1, 0, 0, 0, 0, 0);
	a[n++] = ent(0x40000000, 0, 0x40000001, KVM_EBX, KVM_ECX, KVM_EDX);
	a[n++] = ent(0x40000000, 0, 0x40000010, VMW_EBX, VMW_ECX, VMW_EDX);
	a[n++] = ent(0x40000010, 0, 1, 2, 3, 4);
	a[n++] = ent(0x40000010, 0, 5, 6, 7, 8);
	a[n++] = ent(1, 0, 0, 0, 0, 0); /* a duplicate leaf 1: both copies get the bit */
	a[n++] = ent(0x40000003, 0, 9, 9, 9, 9); /* e.g. a Hyper-V leaf */
	struct vmwkvm_cpuid_opts o = opts_tsc(3000000);
	int r = vmwkvm_cpuid_vmware(NULL, a, n, 16, &o);
	ck_assert_int_eq(r, 4);
	int c;
	find(a, r, 0x40000000, &c);
	ck_assert_int_eq(c, 1);
	const struct kvm_cpuid_entry2 *i = find(a, r, 0x40000010, &c);
	ck_assert_int_eq(c, 1);
	ck_assert_uint_eq(i->eax, 3000000);
	ck_assert_uint_eq(i->ecx, 0);
	ck_assert_uint_eq(i->edx, 0);
	ck_assert_ptr_null(find(a, r, 0x40000003, NULL));
	ck_assert_uint_eq(a[0].ecx, 0x80000000u);
	ck_assert_uint_eq(a[1].ecx, 0x80000000u);
	/* a second call on its own output changes nothing */
	struct kvm_cpuid_entry2 once[16];
	memcpy(once, a, sizeof(a));
	ck_assert_int_eq(vmwkvm_cpuid_vmware(NULL, a, (uint32_t)r, 16, &o), r);
	ck_assert_mem_eq(a, once, sizeof(a));
}
END_TEST

START_TEST(max_leaf_update)
{
	struct kvm_cpuid_entry2 a[8];
	memset(a, 0, sizeof(a));
	a[0] = ent(1, 0, 0, 0, 0, 0);
	a[1] = ent(0x40000000, 0, 0x40000001, VMW_EBX, VMW_ECX, VMW_EDX); /* vendor right, max leaf too low */
	struct vmwkvm_cpuid_opts o = opts_tsc(2000000);
	int r = vmwkvm_cpuid_vmware(NULL, a, 2, 8, &o);
	ck_assert_int_eq(r, 3);
	ck_assert_uint_eq(find(a, r, 0x40000000, NULL)->eax, 0x40000010);
}
END_TEST

START_TEST(khz_units)
{
	struct kvm_cpuid_entry2 a[8];
	memset(a, 0, sizeof(a));
	a[0] = ent(1, 0, 0, 0, 0, 0);
	struct vmwkvm_cpuid_opts o = opts_tsc(2400000); /* 2.4 GHz */
	o.apic_bus_khz = 25000;                          /* 25 MHz */
	int r = vmwkvm_cpuid_vmware(NULL, a, 1, 8, &o);
	ck_assert_int_eq(r, 3);
	const struct kvm_cpuid_entry2 *i = find(a, r, 0x40000010, NULL);
	ck_assert_uint_eq(i->eax, 2400000);
	ck_assert_uint_eq(i->ebx, 25000);
	/* what a guest computes: TSC Hz = EAX * 1000 */
	ck_assert_uint_eq((uint64_t)i->eax * 1000u, 2400000000ull);
}
END_TEST

START_TEST(no_hypercall_bit_without_vm)
{
	struct kvm_cpuid_entry2 a[8];
	memset(a, 0, sizeof(a));
	a[0] = ent(1, 0, 0, 0, 0, 0);
	struct vmwkvm_cpuid_opts o = opts_tsc(2000000);
	o.cpu_vendor = VMWKVM_CPU_VENDOR_INTEL;
	int r = vmwkvm_cpuid_vmware(NULL, a, 1, 8, &o);
	ck_assert_uint_eq(find(a, r, 0x40000010, NULL)->ecx, 0);
	o.cpu_vendor = VMWKVM_CPU_VENDOR_AMD;
	r = vmwkvm_cpuid_vmware(NULL, a, (uint32_t)r, 8, &o);
	ck_assert_uint_eq(find(a, r, 0x40000010, NULL)->ecx, 0);
}
END_TEST

START_TEST(keep_kvm_leaves)
{
	struct kvm_cpuid_entry2 a[16];
	memset(a, 0, sizeof(a));
	uint32_t n = typical(a);
	struct vmwkvm_cpuid_opts o = opts_tsc(2000000);
	o.flags = VMWKVM_CPUID_KEEP_KVM_LEAVES;
	int r = vmwkvm_cpuid_vmware(NULL, a, n, 16, &o);
	ck_assert_int_eq(r, 8);
	const struct kvm_cpuid_entry2 *k = find(a, r, 0x40000100, NULL);
	ck_assert_ptr_nonnull(k);
	ck_assert_uint_eq(k->eax, 0x40000101);
	ck_assert_uint_eq(k->ebx, KVM_EBX);
	ck_assert_uint_eq(k->ecx, KVM_ECX);
	ck_assert_uint_eq(k->edx, KVM_EDX);
	const struct kvm_cpuid_entry2 *f = find(a, r, 0x40000101, NULL);
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(f->eax, 0x01007afb);
	ck_assert_uint_eq(find(a, r, 0x40000000, NULL)->ebx, VMW_EBX);
	ck_assert_ptr_null(find(a, r, 0x40000001, NULL));
	/* idempotent */
	struct kvm_cpuid_entry2 once[16];
	memcpy(once, a, sizeof(a));
	ck_assert_int_eq(vmwkvm_cpuid_vmware(NULL, a, (uint32_t)r, 16, &o), r);
	ck_assert_mem_eq(a, once, sizeof(a));
	/* target range busy */
	memset(a, 0, sizeof(a));
	n = typical(a);
	a[n++] = ent(0x40000150, 0, 1, 1, 1, 1);
	struct kvm_cpuid_entry2 before[16];
	memcpy(before, a, sizeof(a));
	ck_assert_int_eq(vmwkvm_cpuid_vmware(NULL, a, n, 16, &o), -EEXIST);
	ck_assert_mem_eq(a, before, sizeof(a));
	/* no KVM signature at 0x40000000: nothing to keep, the leaves are replaced */
	memset(a, 0, sizeof(a));
	a[0] = ent(1, 0, 0, 0, 0, 0);
	a[1] = ent(0x40000000, 0, 0x40000005, 0x7263694d, 0x666f736f, 0x76482074); /* "Microsoft Hv" */
	r = vmwkvm_cpuid_vmware(NULL, a, 2, 16, &o);
	ck_assert_int_eq(r, 3);
	ck_assert_ptr_null(find(a, r, 0x40000100, NULL));
}
END_TEST

START_TEST(bad_arguments_unchanged)
{
	struct kvm_cpuid_entry2 a[8], before[8];
	memset(a, 0, sizeof(a));
	uint32_t n = typical(a);
	memcpy(before, a, sizeof(a));
	struct vmwkvm_cpuid_opts o = opts_tsc(2000000);
	ck_assert_int_eq(vmwkvm_cpuid_vmware(NULL, NULL, 0, 0, &o), -EINVAL);
	ck_assert_int_eq(vmwkvm_cpuid_vmware(NULL, a, 9, 8, &o), -EINVAL);
	o.reserved[1] = 1;
	ck_assert_int_eq(vmwkvm_cpuid_vmware(NULL, a, n, 8, &o), -EINVAL);
	o.reserved[1] = 0;
	o.flags = 2;
	ck_assert_int_eq(vmwkvm_cpuid_vmware(NULL, a, n, 8, &o), -EINVAL);
	o.flags = 0;
	o.cpu_vendor = 3;
	ck_assert_int_eq(vmwkvm_cpuid_vmware(NULL, a, n, 8, &o), -EINVAL);
	o.cpu_vendor = 0;
	/* no TSC given and nothing to ask */
	o.tsc_khz = 0;
	ck_assert_int_eq(vmwkvm_cpuid_vmware(NULL, a, n, 8, &o), -EINVAL);
	ck_assert_int_eq(vmwkvm_cpuid_vmware(NULL, a, n, 8, NULL), -EINVAL);
	/* no leaf 1 */
	o.tsc_khz = 1;
	struct kvm_cpuid_entry2 b[4];
	memset(b, 0, sizeof(b));
	b[0] = ent(0, 0, 1, 2, 3, 4);
	struct kvm_cpuid_entry2 bb[4];
	memcpy(bb, b, sizeof(b));
	ck_assert_int_eq(vmwkvm_cpuid_vmware(NULL, b, 1, 4, &o), -EINVAL);
	ck_assert_mem_eq(b, bb, sizeof(b));
	ck_assert_mem_eq(a, before, sizeof(a));
	/* an older, smaller opts struct is accepted */
	struct {
		size_t sz;
		uint32_t flags, cpu_vendor, tsc_khz;
	} small = { sizeof(size_t) + 3 * sizeof(uint32_t), 0, 0, 1234 };
	int r = vmwkvm_cpuid_vmware(NULL, a, n, 8, (const struct vmwkvm_cpuid_opts *)(const void *)&small);
	ck_assert_int_eq(r, 6);
	ck_assert_uint_eq(find(a, r, 0x40000010, NULL)->eax, 1234);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("cpuid");
	TCase *t = tcase_create("edit");
	tcase_add_test(t, typical_array);
	tcase_add_test(t, array_too_small_unchanged);
	tcase_add_test(t, duplicates_and_idempotence);
	tcase_add_test(t, max_leaf_update);
	tcase_add_test(t, khz_units);
	tcase_add_test(t, no_hypercall_bit_without_vm);
	tcase_add_test(t, keep_kvm_leaves);
	tcase_add_test(t, bad_arguments_unchanged);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	SRunner *r = srunner_create(suite());
	srunner_run_all(r, CK_NORMAL);
	int failed = srunner_ntests_failed(r);
	srunner_free(r);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
