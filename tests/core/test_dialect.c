/*
 * Dialect logic without a kernel: names, the default dialect, the proposed numbers and their
 * overrides (build defaults, VMWKVM_PROPOSED / VMWKVM_DIALECT, vmwkvm_proposed_set()), and the
 * mainline collision tables that keep auto mode from trusting a taken number.
 *
 * The environment is read once per process, so every environment case runs in a fresh
 * process: this executable re-executes itself with "--child <case>" and the variables set.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vmwkvm/vmwkvm.h>

#include "core/proposed_defaults.h"

static char self_path[4096];

/* ------------------------------------------------------------------ names */

START_TEST(names_round_trip)
{
	static const int ds[] = { VMWKVM_DIALECT_AUTO, VMWKVM_DIALECT_NONE, VMWKVM_DIALECT_RUSIN_V2,
				  VMWKVM_DIALECT_SINGLE_CAP };
	static const char *const names[] = { "auto", "none", "rusin-v2", "single-cap" };
	for (size_t i = 0; i < 4; i++) {
		ck_assert_str_eq(vmwkvm_dialect_name(ds[i]), names[i]);
		ck_assert_int_eq(vmwkvm_dialect_from_name(names[i]), ds[i]);
	}
	ck_assert_str_eq(vmwkvm_dialect_name(3), "invalid");
	ck_assert_str_eq(vmwkvm_dialect_name(-2), "invalid");
	ck_assert_str_eq(vmwkvm_dialect_name(-EINVAL), "invalid");
}
END_TEST

START_TEST(names_parse_edge_cases)
{
	ck_assert_int_eq(vmwkvm_dialect_from_name("RUSIN-V2"), VMWKVM_DIALECT_RUSIN_V2);
	ck_assert_int_eq(vmwkvm_dialect_from_name("Single-Cap"), VMWKVM_DIALECT_SINGLE_CAP);
	ck_assert_int_eq(vmwkvm_dialect_from_name("mainline"), VMWKVM_DIALECT_NONE);
	ck_assert_int_eq(vmwkvm_dialect_from_name(NULL), -EINVAL);
	ck_assert_int_eq(vmwkvm_dialect_from_name(""), -EINVAL);
	ck_assert_int_eq(vmwkvm_dialect_from_name("rusin"), -EINVAL);
	ck_assert_int_eq(vmwkvm_dialect_from_name("rusin-v2 "), -EINVAL);
	ck_assert_int_eq(vmwkvm_dialect_from_name("single_cap"), -EINVAL);
	/* -EINVAL is never a dialect value */
	ck_assert_int_ne(-EINVAL, VMWKVM_DIALECT_AUTO);
}
END_TEST

/* ------------------------------------------------------------------ default dialect */

START_TEST(default_dialect_api)
{
	ck_assert_int_eq(vmwkvm_dialect_set_default(VMWKVM_DIALECT_SINGLE_CAP), 0);
	ck_assert_int_eq(vmwkvm_dialect_get_default(), VMWKVM_DIALECT_SINGLE_CAP);
	ck_assert_int_eq(vmwkvm_dialect_set_default(VMWKVM_DIALECT_NONE), 0);
	ck_assert_int_eq(vmwkvm_dialect_get_default(), VMWKVM_DIALECT_NONE);
	ck_assert_int_eq(vmwkvm_dialect_set_default(VMWKVM_DIALECT_AUTO), 0);
	ck_assert_int_eq(vmwkvm_dialect_get_default(), VMWKVM_DIALECT_AUTO);
	/* invalid values change nothing */
	ck_assert_int_eq(vmwkvm_dialect_set_default(3), -EINVAL);
	ck_assert_int_eq(vmwkvm_dialect_set_default(-2), -EINVAL);
	ck_assert_int_eq(vmwkvm_dialect_set_default(-EINVAL), -EINVAL);
	ck_assert_int_eq(vmwkvm_dialect_get_default(), VMWKVM_DIALECT_AUTO);
}
END_TEST

/* ------------------------------------------------------------------ proposed numbers */

static void expect_build_defaults(const struct vmwkvm_proposed_numbers *n)
{
	ck_assert_uint_eq(n->rusin_cap_backdoor, VMWKVM_PROPOSED_RUSIN_CAP_BACKDOOR_DEFAULT);
	ck_assert_uint_eq(n->rusin_cap_hypercall, VMWKVM_PROPOSED_RUSIN_CAP_HYPERCALL_DEFAULT);
	ck_assert_uint_eq(n->rusin_cap_nested, VMWKVM_PROPOSED_RUSIN_CAP_NESTED_DEFAULT);
	ck_assert_uint_eq(n->rusin_exit_vmware, VMWKVM_PROPOSED_RUSIN_EXIT_VMWARE_DEFAULT);
	ck_assert_uint_eq(n->single_cap, VMWKVM_PROPOSED_SINGLE_CAP_DEFAULT);
	ck_assert_uint_eq(n->single_exit, VMWKVM_PROPOSED_SINGLE_EXIT_DEFAULT);
}

START_TEST(proposed_get_defaults)
{
	struct vmwkvm_proposed_numbers n;
	memset(&n, 0xa5, sizeof(n));
	n.sz = sizeof(n);
	ck_assert_int_eq(vmwkvm_proposed_get(&n), 0);
	expect_build_defaults(&n);
	/* the build defaults are the posted numbers unless the build changed them */
	if (VMWKVM_PROPOSED_RUSIN_CAP_BACKDOOR_DEFAULT == 239u) {
		ck_assert_uint_eq(n.rusin_cap_hypercall, 240);
		ck_assert_uint_eq(n.rusin_cap_nested, 241);
		ck_assert_uint_eq(n.rusin_exit_vmware, 40);
	}
	for (size_t i = 0; i < 6; i++)
		ck_assert_uint_eq(n.reserved[i], 0);
}
END_TEST

START_TEST(proposed_get_bad_args)
{
	ck_assert_int_eq(vmwkvm_proposed_get(NULL), -EINVAL);
	struct vmwkvm_proposed_numbers n;
	memset(&n, 0, sizeof(n));
	n.sz = sizeof(size_t) - 1;
	ck_assert_int_eq(vmwkvm_proposed_get(&n), -EINVAL);
	n.sz = 0;
	ck_assert_int_eq(vmwkvm_proposed_get(&n), -EINVAL);
}
END_TEST

/* An older caller whose struct ends after rusin_cap_backdoor: nothing beyond is written. */
START_TEST(proposed_get_older_smaller_struct)
{
	struct {
		size_t sz;
		uint32_t rusin_cap_backdoor;
		uint32_t canary[16];
	} old;
	memset(&old, 0x5a, sizeof(old));
	old.sz = offsetof(struct vmwkvm_proposed_numbers, rusin_cap_hypercall);
	ck_assert_int_eq(vmwkvm_proposed_get((struct vmwkvm_proposed_numbers *)(void *)&old), 0);
	ck_assert_uint_eq(old.rusin_cap_backdoor, VMWKVM_PROPOSED_RUSIN_CAP_BACKDOOR_DEFAULT);
	for (size_t i = 0; i < 16; i++)
		ck_assert_uint_eq(old.canary[i], 0x5a5a5a5au);
}
END_TEST

START_TEST(proposed_set_and_reset)
{
	struct vmwkvm_proposed_numbers n;
	memset(&n, 0, sizeof(n));
	n.sz = sizeof(n);
	n.rusin_cap_backdoor = 300;
	n.rusin_cap_hypercall = 301;
	n.rusin_cap_nested = 302;
	n.rusin_exit_vmware = 50;
	n.single_cap = 303;
	n.single_exit = 51;
	ck_assert_int_eq(vmwkvm_proposed_set(&n), 0);
	struct vmwkvm_proposed_numbers g;
	memset(&g, 0, sizeof(g));
	g.sz = sizeof(g);
	ck_assert_int_eq(vmwkvm_proposed_get(&g), 0);
	ck_assert_uint_eq(g.rusin_cap_backdoor, 300);
	ck_assert_uint_eq(g.rusin_cap_hypercall, 301);
	ck_assert_uint_eq(g.rusin_cap_nested, 302);
	ck_assert_uint_eq(g.rusin_exit_vmware, 50);
	ck_assert_uint_eq(g.single_cap, 303);
	ck_assert_uint_eq(g.single_exit, 51);
	/* NULL returns to the build (and environment) defaults */
	ck_assert_int_eq(vmwkvm_proposed_set(NULL), 0);
	ck_assert_int_eq(vmwkvm_proposed_get(&g), 0);
	expect_build_defaults(&g);
}
END_TEST

START_TEST(proposed_set_rejects_bad_structs)
{
	struct vmwkvm_proposed_numbers n;
	memset(&n, 0, sizeof(n));
	n.sz = sizeof(n);
	n.rusin_cap_backdoor = 400;
	n.reserved[3] = 1;
	ck_assert_int_eq(vmwkvm_proposed_set(&n), -EINVAL);
	n.reserved[3] = 0;
	n.sz = 3;
	ck_assert_int_eq(vmwkvm_proposed_set(&n), -EINVAL);
	/* a newer caller's bigger struct is accepted only if the unknown tail is zero */
	struct {
		struct vmwkvm_proposed_numbers n;
		uint64_t future[2];
	} big;
	memset(&big, 0, sizeof(big));
	big.n.sz = sizeof(big);
	big.n.single_cap = 401;
	big.future[1] = 7;
	ck_assert_int_eq(vmwkvm_proposed_set(&big.n), -EINVAL);
	/* nothing of the rejected calls took effect */
	struct vmwkvm_proposed_numbers g;
	memset(&g, 0, sizeof(g));
	g.sz = sizeof(g);
	ck_assert_int_eq(vmwkvm_proposed_get(&g), 0);
	expect_build_defaults(&g);
	big.future[1] = 0;
	ck_assert_int_eq(vmwkvm_proposed_set(&big.n), 0);
	ck_assert_int_eq(vmwkvm_proposed_get(&g), 0);
	ck_assert_uint_eq(g.single_cap, 401);
	ck_assert_uint_eq(g.rusin_cap_backdoor, 0); /* a set replaces all numbers */
	ck_assert_int_eq(vmwkvm_proposed_set(NULL), 0);
}
END_TEST

/* ------------------------------------------------------------------ collision tables */

START_TEST(collision_tables_caps)
{
	static const struct {
		uint32_t cap;
		const char *name;
	} known[] = {
		{ 231, "KVM_CAP_USER_MEMORY2" },	    { 232, "KVM_CAP_MEMORY_FAULT_INFO" },
		{ 233, "KVM_CAP_MEMORY_ATTRIBUTES" },	    { 234, "KVM_CAP_GUEST_MEMFD" },
		{ 235, "KVM_CAP_VM_TYPES" },		    { 236, "KVM_CAP_PRE_FAULT_MEMORY" },
		{ 237, "KVM_CAP_X86_APIC_BUS_CYCLES_NS" }, { 238, "KVM_CAP_X86_GUEST_MODE" },
		{ 239, "KVM_CAP_ARM_WRITABLE_IMP_ID_REGS" }, { 240, "KVM_CAP_ARM_EL2" },
		{ 241, "KVM_CAP_ARM_EL2_E2H0" },	    { 242, "KVM_CAP_RISCV_MP_STATE_RESET" },
		{ 243, "KVM_CAP_ARM_CACHEABLE_PFNMAP_SUPPORTED" }, { 244, "KVM_CAP_GUEST_MEMFD_FLAGS" },
		{ 245, "KVM_CAP_ARM_SEA_TO_USER" },	    { 246, "KVM_CAP_S390_USER_OPEREXEC" },
	};
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
		const char *n = vmwkvm_mainline_cap_name(known[i].cap);
		ck_assert_ptr_nonnull(n);
		ck_assert_str_eq(n, known[i].name);
	}
	/* every number from 1 to 230 is taken by an older cap */
	for (uint32_t c = 1; c <= 230; c++)
		ck_assert_ptr_nonnull(vmwkvm_mainline_cap_name(c));
	ck_assert_ptr_null(vmwkvm_mainline_cap_name(0));
	ck_assert_ptr_null(vmwkvm_mainline_cap_name(247));
	ck_assert_ptr_null(vmwkvm_mainline_cap_name(250));
	ck_assert_ptr_null(vmwkvm_mainline_cap_name(UINT32_MAX));
}
END_TEST

START_TEST(collision_tables_exits)
{
	ck_assert_str_eq(vmwkvm_mainline_exit_name(38), "KVM_EXIT_LOONGARCH_IOCSR");
	ck_assert_str_eq(vmwkvm_mainline_exit_name(39), "KVM_EXIT_MEMORY_FAULT");
	ck_assert_str_eq(vmwkvm_mainline_exit_name(40), "KVM_EXIT_TDX");
	ck_assert_str_eq(vmwkvm_mainline_exit_name(41), "KVM_EXIT_ARM_SEA");
	for (uint32_t e = 0; e <= 37; e++)
		ck_assert_ptr_nonnull(vmwkvm_mainline_exit_name(e));
	ck_assert_ptr_null(vmwkvm_mainline_exit_name(42));
	ck_assert_ptr_null(vmwkvm_mainline_exit_name(43));
	ck_assert_ptr_null(vmwkvm_mainline_exit_name(UINT32_MAX));
}
END_TEST

/* The safety rule's premise: each posted rusin-v2 number is taken upstream, and single-cap
 * has no number, so with the default build no proposed cap is trustworthy on mainline. */
START_TEST(default_numbers_are_untrusted)
{
	if (VMWKVM_PROPOSED_RUSIN_CAP_BACKDOOR_DEFAULT != 239u)
		return; /* a build that chose its own numbers */
	struct vmwkvm_proposed_numbers n;
	memset(&n, 0, sizeof(n));
	n.sz = sizeof(n);
	ck_assert_int_eq(vmwkvm_proposed_get(&n), 0);
	ck_assert_ptr_nonnull(vmwkvm_mainline_cap_name(n.rusin_cap_backdoor));
	ck_assert_ptr_nonnull(vmwkvm_mainline_cap_name(n.rusin_cap_hypercall));
	ck_assert_ptr_nonnull(vmwkvm_mainline_cap_name(n.rusin_cap_nested));
	ck_assert_ptr_nonnull(vmwkvm_mainline_exit_name(n.rusin_exit_vmware));
	ck_assert_uint_eq(n.single_cap, 0);
}
END_TEST

/* ------------------------------------------------------------------ environment (child processes) */

/* Child cases: return 0 on success, else the line of the failed check. */
#define CHILD_CHECK(cond)                \
	do {                             \
		if (!(cond))             \
			return __LINE__; \
	} while (0)

static int get_numbers(struct vmwkvm_proposed_numbers *n)
{
	memset(n, 0, sizeof(*n));
	n->sz = sizeof(*n);
	return vmwkvm_proposed_get(n);
}

static int warnings;
static void count_warnings(int level, const char *msg, void *ctx)
{
	(void)msg;
	(void)ctx;
	if (level == VMWKVM_LOG_WARN)
		warnings++;
}

static int child_env_numbers(void)
{
	/* VMWKVM_PROPOSED="rusin.cap_backdoor=250,single.cap=0x105,single.exit=44" */
	struct vmwkvm_proposed_numbers n;
	CHILD_CHECK(get_numbers(&n) == 0);
	CHILD_CHECK(n.rusin_cap_backdoor == 250);
	CHILD_CHECK(n.single_cap == 0x105);
	CHILD_CHECK(n.single_exit == 44);
	CHILD_CHECK(n.rusin_cap_hypercall == VMWKVM_PROPOSED_RUSIN_CAP_HYPERCALL_DEFAULT);
	CHILD_CHECK(n.rusin_exit_vmware == VMWKVM_PROPOSED_RUSIN_EXIT_VMWARE_DEFAULT);
	return 0;
}

static int child_env_bad_tokens(void)
{
	/* VMWKVM_PROPOSED="bogus=1,rusin.exit=abc,novalue,single.exit=44 rusin.cap_nested=300,single.cap=99999999999,
	 * rusin.cap_hypercall=" */
	vmwkvm_set_log(count_warnings, NULL, VMWKVM_LOG_WARN);
	struct vmwkvm_proposed_numbers n;
	CHILD_CHECK(get_numbers(&n) == 0);
	CHILD_CHECK(n.single_exit == 44);
	CHILD_CHECK(n.rusin_cap_nested == 300);
	CHILD_CHECK(n.rusin_exit_vmware == VMWKVM_PROPOSED_RUSIN_EXIT_VMWARE_DEFAULT);
	CHILD_CHECK(n.single_cap == VMWKVM_PROPOSED_SINGLE_CAP_DEFAULT);
	CHILD_CHECK(n.rusin_cap_hypercall == VMWKVM_PROPOSED_RUSIN_CAP_HYPERCALL_DEFAULT);
	CHILD_CHECK(warnings == 5); /* bogus, abc, novalue, too big, empty value */
	return 0;
}

static int child_env_too_long(void)
{
	/* VMWKVM_PROPOSED longer than the parser accepts: ignored entirely */
	vmwkvm_set_log(count_warnings, NULL, VMWKVM_LOG_WARN);
	struct vmwkvm_proposed_numbers n;
	CHILD_CHECK(get_numbers(&n) == 0);
	CHILD_CHECK(n.rusin_cap_backdoor == VMWKVM_PROPOSED_RUSIN_CAP_BACKDOOR_DEFAULT);
	CHILD_CHECK(n.single_cap == VMWKVM_PROPOSED_SINGLE_CAP_DEFAULT);
	CHILD_CHECK(warnings == 1);
	return 0;
}

static int child_env_then_api(void)
{
	/* VMWKVM_PROPOSED="single.cap=260": the API overrides it; NULL returns to it, not to the build default */
	struct vmwkvm_proposed_numbers n;
	CHILD_CHECK(get_numbers(&n) == 0);
	CHILD_CHECK(n.single_cap == 260);
	struct vmwkvm_proposed_numbers s = n;
	s.single_cap = 270;
	CHILD_CHECK(vmwkvm_proposed_set(&s) == 0);
	CHILD_CHECK(get_numbers(&n) == 0);
	CHILD_CHECK(n.single_cap == 270);
	CHILD_CHECK(vmwkvm_proposed_set(NULL) == 0);
	CHILD_CHECK(get_numbers(&n) == 0);
	CHILD_CHECK(n.single_cap == 260);
	return 0;
}

static int child_env_dialect(void)
{
	/* VMWKVM_DIALECT="Rusin-V2" */
	CHILD_CHECK(vmwkvm_dialect_get_default() == VMWKVM_DIALECT_RUSIN_V2);
	CHILD_CHECK(vmwkvm_dialect_set_default(VMWKVM_DIALECT_NONE) == 0);
	CHILD_CHECK(vmwkvm_dialect_get_default() == VMWKVM_DIALECT_NONE);
	return 0;
}

static int child_env_dialect_bad(void)
{
	/* VMWKVM_DIALECT="klingon": ignored with a warning, the build default stays */
	vmwkvm_set_log(count_warnings, NULL, VMWKVM_LOG_WARN);
	int build = vmwkvm_dialect_from_name(VMWKVM_DEFAULT_DIALECT_NAME);
	if (build == -EINVAL)
		build = VMWKVM_DIALECT_AUTO;
	CHILD_CHECK(vmwkvm_dialect_get_default() == build);
	CHILD_CHECK(warnings == 1);
	return 0;
}

static int child_env_empty(void)
{
	/* VMWKVM_PROPOSED="" and VMWKVM_DIALECT="": both ignored silently */
	vmwkvm_set_log(count_warnings, NULL, VMWKVM_LOG_WARN);
	struct vmwkvm_proposed_numbers n;
	CHILD_CHECK(get_numbers(&n) == 0);
	CHILD_CHECK(n.rusin_cap_backdoor == VMWKVM_PROPOSED_RUSIN_CAP_BACKDOOR_DEFAULT);
	CHILD_CHECK(warnings == 0);
	return 0;
}

static const struct child_case {
	const char *name;
	int (*fn)(void);
} child_cases[] = {
	{ "env_numbers", child_env_numbers },	  { "env_bad_tokens", child_env_bad_tokens },
	{ "env_too_long", child_env_too_long },	  { "env_then_api", child_env_then_api },
	{ "env_dialect", child_env_dialect },	  { "env_dialect_bad", child_env_dialect_bad },
	{ "env_empty", child_env_empty },
};

/* Run `self --child name` with the given environment (NULL-terminated "K=V" list only). */
static int run_child(const char *name, const char *const *env)
{
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		char *argv[] = { self_path, (char *)"--child", (char *)name, NULL };
		execve(self_path, argv, (char *const *)env);
		_exit(127);
	}
	int st = 0;
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert_msg(WIFEXITED(st), "child %s died (status 0x%x)", name, st);
	return WEXITSTATUS(st);
}

#define EXPECT_CHILD_OK(name, ...)                                                        \
	do {                                                                              \
		const char *const env_[] = { __VA_ARGS__, NULL };                         \
		int rc_ = run_child(name, env_);                                          \
		ck_assert_msg(rc_ == 0, "child case %s failed at test_dialect.c:%d", name, rc_); \
	} while (0)

START_TEST(env_overrides)
{
	EXPECT_CHILD_OK("env_numbers", "VMWKVM_PROPOSED=rusin.cap_backdoor=250,single.cap=0x105,single.exit=44");
	EXPECT_CHILD_OK("env_bad_tokens", "VMWKVM_PROPOSED=bogus=1,rusin.exit=abc,novalue,single.exit=44 "
					  "rusin.cap_nested=300,single.cap=99999999999,rusin.cap_hypercall=");
	static char long_spec[700];
	memset(long_spec, 0, sizeof(long_spec));
	strcpy(long_spec, "VMWKVM_PROPOSED=single.cap=1");
	for (size_t i = strlen(long_spec); i < sizeof(long_spec) - 1; i++)
		long_spec[i] = ',';
	EXPECT_CHILD_OK("env_too_long", long_spec);
	EXPECT_CHILD_OK("env_then_api", "VMWKVM_PROPOSED=single.cap=260");
	EXPECT_CHILD_OK("env_dialect", "VMWKVM_DIALECT=Rusin-V2");
	EXPECT_CHILD_OK("env_dialect_bad", "VMWKVM_DIALECT=klingon");
	EXPECT_CHILD_OK("env_empty", "VMWKVM_PROPOSED=", "VMWKVM_DIALECT=");
}
END_TEST

static Suite *dialect_suite(void)
{
	Suite *s = suite_create("dialect");
	TCase *tc = tcase_create("names");
	tcase_add_test(tc, names_round_trip);
	tcase_add_test(tc, names_parse_edge_cases);
	tcase_add_test(tc, default_dialect_api);
	suite_add_tcase(s, tc);
	tc = tcase_create("numbers");
	tcase_add_test(tc, proposed_get_defaults);
	tcase_add_test(tc, proposed_get_bad_args);
	tcase_add_test(tc, proposed_get_older_smaller_struct);
	tcase_add_test(tc, proposed_set_and_reset);
	tcase_add_test(tc, proposed_set_rejects_bad_structs);
	suite_add_tcase(s, tc);
	tc = tcase_create("collisions");
	tcase_add_test(tc, collision_tables_caps);
	tcase_add_test(tc, collision_tables_exits);
	tcase_add_test(tc, default_numbers_are_untrusted);
	suite_add_tcase(s, tc);
	tc = tcase_create("environment");
	tcase_add_test(tc, env_overrides);
	suite_add_tcase(s, tc);
	return s;
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--child") == 0) {
		for (size_t i = 0; i < sizeof(child_cases) / sizeof(child_cases[0]); i++)
			if (strcmp(child_cases[i].name, argv[2]) == 0)
				return child_cases[i].fn();
		return 126;
	}
	ssize_t n = readlink("/proc/self/exe", self_path, sizeof(self_path) - 1);
	if (n <= 0)
		return 99;
	self_path[n] = '\0';
	/* Nothing here may touch the library before the tests: the environment is read once.
	 * The in-process tests expect the build defaults. */
	unsetenv("VMWKVM_PROPOSED");
	unsetenv("VMWKVM_DIALECT");
	SRunner *sr = srunner_create(dialect_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
