/*
 * vmwkvm-minivmm's pure parts, without KVM: command line (mvm_parse_args), the guest
 * layout and vCPU start state (mvm_layout), and the guestinfo store and its dump.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vmwkvm/vmwkvm.h>

#include "options.h"
#include "store.h"

static struct mvm_options opt;
static char err[256];

#define ARGV(...) ((const char *const[]){"vmwkvm-minivmm", __VA_ARGS__, NULL})
#define ARGC(...) ((int)(sizeof((const char *const[]){"vmwkvm-minivmm", __VA_ARGS__}) / sizeof(char *)))
#define PARSE(...) mvm_parse_args(ARGC(__VA_ARGS__), ARGV(__VA_ARGS__), vmwkvm_backdoor_command_from_name, &opt, err, sizeof(err))

/* ---------------------------------------------------------------- parsing */

START_TEST(defaults)
{
	ck_assert_int_eq(PARSE("--guest", "g.bin"), 0);
	ck_assert_str_eq(opt.guest, "g.bin");
	ck_assert_int_eq(opt.mode, MVM_MODE_REAL);
	ck_assert_uint_eq(opt.load, 0x1000);
	ck_assert_uint_eq(opt.entry, 0x1000);
	ck_assert(!opt.entry_set);
	ck_assert_uint_eq(opt.mem_mib, 16);
	ck_assert_uint_eq(opt.vcpus, 1);
	ck_assert_int_eq(opt.cpuid, MVM_CPUID_VMWARE);
	ck_assert_uint_eq(opt.timeout, 60);
	ck_assert(!opt.policy_set);
	ck_assert(!opt.l2_allow_set);
	ck_assert_ptr_null(opt.dump);
	ck_assert_uint_eq(opt.n_presets, 0);
	ck_assert_int_eq(opt.verbose, 0);
}
END_TEST

START_TEST(all_options_both_forms)
{
	ck_assert_int_eq(PARSE("--guest=x.bin", "--mode", "prot32", "--load=0x2000", "--entry", "0x2010",
			       "--mem=64", "--vcpus", "4", "--guestinfo-dump", "d.txt", "--cpuid=kvm", "--timeout", "0",
			       "-v", "--verbose"),
			 0);
	ck_assert_str_eq(opt.guest, "x.bin");
	ck_assert_int_eq(opt.mode, MVM_MODE_PROT32);
	ck_assert_uint_eq(opt.load, 0x2000);
	ck_assert_uint_eq(opt.entry, 0x2010);
	ck_assert(opt.entry_set);
	ck_assert_uint_eq(opt.mem_mib, 64);
	ck_assert_uint_eq(opt.vcpus, 4);
	ck_assert_str_eq(opt.dump, "d.txt");
	ck_assert_int_eq(opt.cpuid, MVM_CPUID_KVM);
	ck_assert_uint_eq(opt.timeout, 0);
	ck_assert_int_eq(opt.verbose, 2);
}
END_TEST

START_TEST(tools_cmds)
{
	ck_assert_int_eq(PARSE("--guest", "g", "--tools-cmd", "ping", "--tools-cmd=Set_Option synctime 0",
			       "--tools-cmd", "OS_Halt"),
			 0);
	ck_assert_uint_eq(opt.n_tools_cmds, 3);
	ck_assert_str_eq(opt.tools_cmds[0], "ping");
	ck_assert_str_eq(opt.tools_cmds[1], "Set_Option synctime 0");
	ck_assert_str_eq(opt.tools_cmds[2], "OS_Halt");
	ck_assert_int_eq(PARSE("--guest", "g", "--tools-cmd", ""), -1);
	ck_assert_str_eq(err, "--tools-cmd: 1 to 4096 bytes, not 0");
	static char longcmd[MVM_MAX_TOOLS_CMD_LEN + 2];
	memset(longcmd, 'x', MVM_MAX_TOOLS_CMD_LEN + 1);
	ck_assert_int_eq(PARSE("--guest", "g", "--tools-cmd", longcmd), -1);
	longcmd[MVM_MAX_TOOLS_CMD_LEN] = '\0';
	ck_assert_int_eq(PARSE("--guest", "g", "--tools-cmd", longcmd), 0);
	const char *argv[2 + 2 * (MVM_MAX_TOOLS_CMDS + 1)];
	int argc = 0;
	argv[argc++] = "x";
	argv[argc++] = "--guest=g";
	for (int i = 0; i <= MVM_MAX_TOOLS_CMDS; i++) {
		argv[argc++] = "--tools-cmd";
		argv[argc++] = "ping";
	}
	ck_assert_int_eq(mvm_parse_args(argc - 2, argv, NULL, &opt, err, sizeof(err)), 0);
	ck_assert_uint_eq(opt.n_tools_cmds, MVM_MAX_TOOLS_CMDS);
	ck_assert_int_eq(mvm_parse_args(argc, argv, NULL, &opt, err, sizeof(err)), -1);
	ck_assert_str_eq(err, "--tools-cmd: at most 32 commands");
}
END_TEST

START_TEST(numbers)
{
	ck_assert_int_eq(PARSE("--guest", "g", "--load", "4096"), 0);
	ck_assert_uint_eq(opt.load, 4096);
	ck_assert_int_eq(PARSE("--guest", "g", "--load", "010"), 0); /* decimal, not octal */
	ck_assert_uint_eq(opt.load, 10);
	ck_assert_int_eq(PARSE("--guest", "g", "--load", "0XfFfF"), 0);
	ck_assert_uint_eq(opt.load, 0xFFFF);
	ck_assert_int_eq(PARSE("--guest", "g", "--load", "0xFFFFFFFF"), 0);
	static const char *const bad[] = {"", "0x", "12abc", "-1", "+1", " 1", "0x100000000", "99999999999999999999"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_int_eq(PARSE("--guest", "g", "--load", bad[i]), -1);
		ck_assert_msg(strstr(err, "--load") != NULL, "%s", err);
	}
	ck_assert_int_eq(PARSE("--guest", "g", "--entry", "0x1x"), -1);
}
END_TEST

START_TEST(ranges)
{
	ck_assert_int_eq(PARSE("--guest", "g", "--vcpus", "0"), -1);
	ck_assert_int_eq(PARSE("--guest", "g", "--vcpus", "17"), -1);
	ck_assert_int_eq(PARSE("--guest", "g", "--vcpus", "16"), 0);
	ck_assert_int_eq(PARSE("--guest", "g", "--mem", "0"), -1);
	ck_assert_int_eq(PARSE("--guest", "g", "--mem", "3073"), -1);
	ck_assert_int_eq(PARSE("--guest", "g", "--mem", "3072"), 0);
	ck_assert_int_eq(PARSE("--guest", "g", "--timeout", "86401"), -1);
	ck_assert_int_eq(PARSE("--guest", "g", "--mode", "long"), -1);
	ck_assert_str_eq(err, "--mode must be 'real' or 'prot32', not 'long'");
	ck_assert_int_eq(PARSE("--guest", "g", "--cpuid", "xen"), -1);
	ck_assert_int_eq(PARSE("--guest", ""), -1);
}
END_TEST

START_TEST(errors)
{
	ck_assert_int_eq(mvm_parse_args(1, ARGV("x") /* argc 1: no arguments */, NULL, &opt, err, sizeof(err)), -1);
	ck_assert_str_eq(err, "--guest FILE is required");
	ck_assert_int_eq(PARSE("--guest"), -1);
	ck_assert_str_eq(err, "option '--guest' needs a value");
	ck_assert_int_eq(PARSE("--guest", "g", "--frobnicate"), -1);
	ck_assert_str_eq(err, "unknown option '--frobnicate'");
	ck_assert_int_eq(PARSE("--guest", "g", "--guests=x"), -1);
	ck_assert_int_eq(PARSE("--guest", "g", "extra"), -1);
	ck_assert_str_eq(err, "unexpected argument 'extra'");
	ck_assert_int_eq(PARSE("--guest", "g", "--a-very-long-option-name-that-is-not-known"), -1);
	/* a NULL error buffer is allowed */
	ck_assert_int_eq(mvm_parse_args(ARGC("--bad"), ARGV("--bad"), NULL, &opt, NULL, 0), -1);
}
END_TEST

START_TEST(help_and_version_stop_early)
{
	ck_assert_int_eq(PARSE("--help", "--nonsense"), 0);
	ck_assert(opt.help);
	ck_assert_int_eq(PARSE("-h"), 0);
	ck_assert(opt.help);
	ck_assert_int_eq(PARSE("--version"), 0);
	ck_assert(opt.version);
	ck_assert_ptr_nonnull(strstr(mvm_usage, "--guest FILE"));
	ck_assert_ptr_nonnull(strstr(mvm_usage, "--l2-allow"));
}
END_TEST

START_TEST(policy)
{
	ck_assert_int_eq(PARSE("--guest", "g", "--vmware-policy", "backdoor,hypercall,nested"), 0);
	ck_assert(opt.policy_set);
	ck_assert_uint_eq(opt.policy, MVM_POLICY_BACKDOOR | MVM_POLICY_HYPERCALL | MVM_POLICY_NESTED);
	ck_assert_int_eq(PARSE("--guest", "g", "--vmware-policy=hypercall"), 0);
	ck_assert_uint_eq(opt.policy, MVM_POLICY_HYPERCALL);
	ck_assert_int_eq(PARSE("--guest", "g", "--vmware-policy", "nested,backdoor"), 0);
	ck_assert_uint_eq(opt.policy, MVM_POLICY_BACKDOOR | MVM_POLICY_NESTED);

	ck_assert_int_eq(PARSE("--guest", "g", "--vmware-policy", "nested"), -1);
	ck_assert_str_eq(err, "--vmware-policy: 'nested' requires 'backdoor'");
	ck_assert_int_eq(PARSE("--guest", "g", "--vmware-policy", "backdoor,backdoor"), -1);
	ck_assert_str_eq(err, "--vmware-policy: 'backdoor' given twice");
	ck_assert_int_eq(PARSE("--guest", "g", "--vmware-policy", "backdoor,"), -1);
	ck_assert_int_eq(PARSE("--guest", "g", "--vmware-policy", ""), -1);
	ck_assert_int_eq(PARSE("--guest", "g", "--vmware-policy", "Backdoor"), -1);
	ck_assert_str_eq(err, "--vmware-policy: unknown switch 'Backdoor' (known: backdoor, hypercall, nested)");
	/* our bits are the library's bits */
	ck_assert_uint_eq(MVM_POLICY_BACKDOOR, VMWKVM_POLICY_BACKDOOR);
	ck_assert_uint_eq(MVM_POLICY_HYPERCALL, VMWKVM_POLICY_HYPERCALL);
	ck_assert_uint_eq(MVM_POLICY_NESTED, VMWKVM_POLICY_NESTED_BACKDOOR);
}
END_TEST

START_TEST(l2_allow)
{
	ck_assert_int_eq(PARSE("--guest", "g", "--l2-allow", "GETVERSION,message,0x2d,68"), 0);
	ck_assert(opt.l2_allow_set);
	ck_assert_uint_eq(opt.n_l2_allow, 4);
	ck_assert_uint_eq(opt.l2_allow[0], 10);
	ck_assert_uint_eq(opt.l2_allow[1], 30);
	ck_assert_uint_eq(opt.l2_allow[2], 45);
	ck_assert_uint_eq(opt.l2_allow[3], 68);
	ck_assert_int_eq(PARSE("--guest", "g", "--l2-allow", "none"), 0);
	ck_assert(opt.l2_allow_set);
	ck_assert_uint_eq(opt.n_l2_allow, 0);

	ck_assert_int_eq(PARSE("--guest", "g", "--l2-allow", "GETVERSION,BOGUS"), -1);
	ck_assert_str_eq(err, "--l2-allow: unknown backdoor command 'BOGUS'");
	ck_assert_int_eq(PARSE("--guest", "g", "--l2-allow", "GETVERSION,,MESSAGE"), -1);
	ck_assert_int_eq(PARSE("--guest", "g", "--l2-allow", ""), -1);
	ck_assert_int_eq(PARSE("--guest", "g", "--l2-allow", "0x10000"), -1);
	/* without a parser every command is unknown */
	ck_assert_int_eq(mvm_parse_args(ARGC("--guest", "g", "--l2-allow", "10"), ARGV("--guest", "g", "--l2-allow", "10"),
					NULL, &opt, err, sizeof(err)),
			 -1);
	/* bounded list */
	char list[4096] = "";
	for (int i = 0; i <= MVM_MAX_L2_ALLOW; i++)
		strcat(list, i ? ",10" : "10");
	ck_assert_int_eq(PARSE("--guest", "g", "--l2-allow", list), -1);
	ck_assert_ptr_nonnull(strstr(err, "more than"));
}
END_TEST

START_TEST(presets)
{
	ck_assert_int_eq(PARSE("--guest", "g", "--guestinfo", "guestinfo.a.b=x y", "--guestinfo=c=d=e", "--guestinfo", "e="),
			 0);
	ck_assert_uint_eq(opt.n_presets, 3);
	ck_assert_uint_eq(opt.presets[0].key_len, 3);
	ck_assert_int_eq(strncmp(opt.presets[0].key, "a.b", 3), 0);
	ck_assert_str_eq(opt.presets[0].value, "x y");
	ck_assert_uint_eq(opt.presets[1].key_len, 1);
	ck_assert_int_eq(strncmp(opt.presets[1].key, "c", 1), 0);
	ck_assert_str_eq(opt.presets[1].value, "d=e");
	ck_assert_str_eq(opt.presets[2].value, "");
	ck_assert_int_eq(PARSE("--guest", "g", "--guestinfo", "=x"), -1);
	ck_assert_int_eq(PARSE("--guest", "g", "--guestinfo", "novalue"), -1);
}
END_TEST

/* ---------------------------------------------------------------- layout */

START_TEST(layout_real)
{
	struct mvm_vcpu_start st;
	ck_assert_int_eq(PARSE("--guest", "g", "--vcpus", "3"), 0);
	ck_assert_int_eq(mvm_layout(&opt, 0x800, 0, &st, err, sizeof(err)), 0);
	ck_assert_uint_eq(st.seg, 0);
	ck_assert_uint_eq(st.ip, 0x1000);
	ck_assert_uint_eq(st.sp, 0xFFF0);
	ck_assert_uint_eq(st.edi, 0);
	ck_assert_uint_eq(st.esi, 3);
	ck_assert_uint_eq(st.rflags, 0x2);
	ck_assert_int_eq(mvm_layout(&opt, 0x800, 2, &st, err, sizeof(err)), 0);
	ck_assert_uint_eq(st.sp, 0xFFF0 - 2 * 0x400);
	ck_assert_uint_eq(st.edi, 2);
	ck_assert_int_eq(mvm_layout(&opt, 0x800, 3, &st, err, sizeof(err)), -1);

	/* segment from the entry: 0x12345 -> 1000:2345 */
	ck_assert_int_eq(PARSE("--guest", "g", "--load", "0x12000", "--entry", "0x12345"), 0);
	ck_assert_int_eq(mvm_layout(&opt, 0x400, 0, &st, err, sizeof(err)), 0);
	ck_assert_uint_eq(st.seg, 0x1000);
	ck_assert_uint_eq(st.ip, 0x2345);
	ck_assert_uint_eq(st.sp, 0xFFF0);

	/* the image must stay below the stacks of the entry's segment */
	ck_assert_int_eq(PARSE("--guest", "g", "--vcpus", "16"), 0);
	ck_assert_int_eq(mvm_layout(&opt, 0xBFF0 - 0x1000, 0, &st, err, sizeof(err)), 0);
	ck_assert_int_eq(mvm_layout(&opt, 0xBFF0 - 0x1000 + 1, 0, &st, err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "overlaps the vCPU stacks"));

	ck_assert_int_eq(PARSE("--guest", "g", "--entry", "0x100000"), 0);
	ck_assert_int_eq(mvm_layout(&opt, 16, 0, &st, err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "above 1 MiB"));
}
END_TEST

START_TEST(layout_prot32)
{
	struct mvm_vcpu_start st;
	ck_assert_int_eq(PARSE("--guest", "g", "--mode", "prot32", "--vcpus", "2", "--mem", "16"), 0);
	ck_assert_int_eq(mvm_layout(&opt, 0x1000, 0, &st, err, sizeof(err)), 0);
	ck_assert_uint_eq(st.ip, 0x1000);
	ck_assert_uint_eq(st.sp, 16u << 20);
	ck_assert_uint_eq(st.rflags, 0x3002);
	ck_assert_int_eq(mvm_layout(&opt, 0x1000, 1, &st, err, sizeof(err)), 0);
	ck_assert_uint_eq(st.sp, (16u << 20) - 0x10000);
	ck_assert_uint_eq(st.edi, 1);
	ck_assert_uint_eq(st.esi, 2);

	ck_assert_int_eq(PARSE("--guest", "g", "--mode", "prot32", "--load", "0x400"), 0);
	ck_assert_int_eq(mvm_layout(&opt, 0x100, 0, &st, err, sizeof(err)), 0); /* ends at the GDT */
	ck_assert_int_eq(mvm_layout(&opt, 0x101, 0, &st, err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "overlaps the GDT"));
	ck_assert_int_eq(mvm_layout(&opt, 0x101, 0, &st, NULL, 0), -1);
	ck_assert_int_eq(PARSE("--guest", "g", "--mode", "prot32", "--load", "0x528"), 0);
	ck_assert_int_eq(mvm_layout(&opt, 0x100, 0, &st, err, sizeof(err)), 0);

	/* image reaching into the stacks at the top of RAM */
	ck_assert_int_eq(PARSE("--guest", "g", "--mode", "prot32", "--mem", "1", "--load", "0x1000"), 0);
	ck_assert_int_eq(mvm_layout(&opt, (1u << 20) - 0x10000 - 0x1000, 0, &st, err, sizeof(err)), 0);
	ck_assert_int_eq(mvm_layout(&opt, (1u << 20) - 0x10000 - 0x1000 + 1, 0, &st, err, sizeof(err)), -1);
}
END_TEST

START_TEST(layout_fit)
{
	struct mvm_vcpu_start st;
	ck_assert_int_eq(PARSE("--guest", "g", "--mem", "1", "--mode", "prot32"), 0);
	ck_assert_int_eq(mvm_layout(&opt, 0, 0, &st, err, sizeof(err)), -1);
	ck_assert_str_eq(err, "the guest image is empty");
	ck_assert_int_eq(PARSE("--guest", "g", "--mem", "1", "--load", "0x100000"), 0);
	ck_assert_int_eq(mvm_layout(&opt, 1, 0, &st, err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "does not fit"));
	ck_assert_int_eq(PARSE("--guest", "g", "--mem", "1", "--load", "0xFFFFFFFF"), 0);
	ck_assert_int_eq(mvm_layout(&opt, 0xFFFFFFFFFFFFFFFFull, 0, &st, err, sizeof(err)), -1);
	ck_assert_int_eq(PARSE("--guest", "g", "--mem", "1", "--mode", "prot32", "--entry", "0x100000"), 0);
	ck_assert_int_eq(mvm_layout(&opt, 16, 0, &st, err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "outside RAM"));
}
END_TEST

START_TEST(gdt_is_flat_sysexit_layout)
{
	/* null, code0, data0, code3, data3: base 0, limit 0xFFFFF pages, 32-bit, present */
	ck_assert_uint_eq(mvm_gdt[0], 0);
	static const unsigned access[] = {0, 0x9B, 0x93, 0xFB, 0xF3};
	for (unsigned i = 1; i < MVM_GDT_ENTRIES; i++) {
		uint64_t d = mvm_gdt[i];
		ck_assert_uint_eq(d & 0xFFFF, 0xFFFF);                 /* limit 15:0 */
		ck_assert_uint_eq((d >> 16) & 0xFFFFFF, 0);            /* base 23:0 */
		ck_assert_uint_eq((d >> 40) & 0xFF, access[i]);        /* P, DPL, S, type */
		ck_assert_uint_eq((d >> 48) & 0xF, 0xF);               /* limit 19:16 */
		ck_assert_uint_eq((d >> 52) & 0xF, 0xC);               /* G, D/B */
		ck_assert_uint_eq(d >> 56, 0);                         /* base 31:24 */
	}
	ck_assert_uint_eq(MVM_SEL_CODE0 + 16, 0x18); /* SYSEXIT CS (RPL 3 -> 0x1B) */
	ck_assert_uint_eq(MVM_SEL_CODE0 + 24, 0x20); /* SYSEXIT SS (RPL 3 -> 0x23) */
}
END_TEST

/* ---------------------------------------------------------------- store */

static char *dump_to_string(struct mvm_kv *e, size_t n)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(mvm_store_dump(e, n, f), 0);
	fclose(f);
	return buf;
}

#define KV(k, v) {(char *)(k), (char *)(v), sizeof(v) - 1}

START_TEST(store_dump_sorted)
{
	struct mvm_kv e[] = {KV("zeta", "last"), KV("alpha", "first"), KV("alph", "prefix"), KV("mid", "")};
	char *d = dump_to_string(e, 4);
	ck_assert_str_eq(d, "alph=prefix\nalpha=first\nmid=\nzeta=last\n");
	free(d);
	d = dump_to_string(NULL, 0);
	ck_assert_str_eq(d, "");
	free(d);
}
END_TEST

START_TEST(store_keys_and_limits)
{
	ck_assert(mvm_store_key_ok("a", 1));
	ck_assert(mvm_store_key_ok("x.y-z_1:2", 9));
	ck_assert(!mvm_store_key_ok("", 0));
	ck_assert(!mvm_store_key_ok("a b", 3));
	ck_assert(!mvm_store_key_ok("a=b", 3));
	ck_assert(!mvm_store_key_ok("a\\b", 3));
	ck_assert(!mvm_store_key_ok("a\nb", 3));
	ck_assert(!mvm_store_key_ok("a\x80", 2));
	ck_assert(!mvm_store_key_ok("a\0b", 3));
	char longkey[MVM_STORE_MAX_KEY + 1];
	memset(longkey, 'k', sizeof(longkey));
	ck_assert(mvm_store_key_ok(longkey, MVM_STORE_MAX_KEY));
	ck_assert(!mvm_store_key_ok(longkey, MVM_STORE_MAX_KEY + 1));
}
END_TEST

START_TEST(store_dump_escapes)
{
	static const char v[] = "a\\b\nc\rd\te\x01\x7f\xff=f\0g";
	struct mvm_kv e[] = {KV("k", v)};
	char *d = dump_to_string(e, 1);
	ck_assert_str_eq(d, "k=a\\\\b\\nc\\rd\\x09e\\x01\\x7f\\xff=f\\x00g\n");
	free(d);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("minivmm_options");
	TCase *t = tcase_create("args");
	tcase_add_test(t, tools_cmds);
	tcase_add_test(t, defaults);
	tcase_add_test(t, all_options_both_forms);
	tcase_add_test(t, numbers);
	tcase_add_test(t, ranges);
	tcase_add_test(t, errors);
	tcase_add_test(t, help_and_version_stop_early);
	tcase_add_test(t, policy);
	tcase_add_test(t, l2_allow);
	tcase_add_test(t, presets);
	suite_add_tcase(s, t);
	t = tcase_create("layout");
	tcase_add_test(t, layout_real);
	tcase_add_test(t, layout_prot32);
	tcase_add_test(t, layout_fit);
	tcase_add_test(t, gdt_is_flat_sysexit_layout);
	suite_add_tcase(s, t);
	t = tcase_create("store");
	tcase_add_test(t, store_dump_sorted);
	tcase_add_test(t, store_keys_and_limits);
	tcase_add_test(t, store_dump_escapes);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
