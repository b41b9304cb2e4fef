/*
 * refkvm: `vmwkvm-probe --json`, given refkvm's numbers (VMWKVM_PROPOSED), reports each
 * dialect present and verified on the reference KVM, and absent on the stock kernel.
 * VMWKVM_REFKVM=1: the reference KVM must be loaded; VMWKVM_REFKVM=stock: the packaged
 * KVM of the same kernel must be (refkvm/run-tests.sh runs both); otherwise the test
 * follows what the running kernel is and skips where it is neither (no /dev/kvm).
 */
#include "refkvm_env.h"

#define PROPOSED "rusin.cap_backdoor=900,rusin.cap_hypercall=901,rusin.cap_nested=902,rusin.exit=90,single.cap=903,single.exit=91"

static bool stock;
static char out[262144];

static void run_probe(const char *dialect)
{
	char cmd[1024];
	snprintf(cmd, sizeof(cmd), "VMWKVM_PROPOSED='%s' VMWKVM_DIALECT='%s' '%s' --json", PROPOSED, dialect,
		 VMWKVM_PROBE_TOOL);
	FILE *f = popen(cmd, "r");
	ck_assert_ptr_nonnull(f);
	size_t n = fread(out, 1, sizeof(out) - 1, f);
	out[n] = '\0';
	int st = pclose(f);
	ck_assert_msg(st == 0, "%s exited with status %d", cmd, st);
}

/* the text of the JSON object that follows `"key": {` after the first occurrence of `after` */
static const char *object(const char *after, const char *key, char *buf, size_t len)
{
	const char *p = after ? strstr(out, after) : out;
	ck_assert_msg(p != NULL, "no %s in the probe output", after);
	char k[96];
	snprintf(k, sizeof(k), "\"%s\": {", key);
	p = strstr(p, k);
	ck_assert_msg(p != NULL, "no %s after %s in the probe output", key, after ? after : "the start");
	const char *e = strchr(p, '}');
	ck_assert_ptr_nonnull(e);
	size_t l = (size_t)(e - p) < len - 1 ? (size_t)(e - p) : len - 1;
	memcpy(buf, p, l);
	buf[l] = '\0';
	return buf;
}

START_TEST(dialects_reported)
{
	static const char *const requested[2] = { "auto", "rusin-v2" };
	run_probe(requested[_i]);
	char b[2048];
	const char *d = object(NULL, "dialect", b, sizeof(b));
	if (stock) {
		/* auto falls back to none (verified: mainline); rusin-v2 asked for is not verified */
		if (_i == 0)
			ck_assert_msg(strstr(d, "\"name\": \"none\""), "%s", d);
		else
			ck_assert_msg(!strstr(d, "\"verified\": true"), "%s", d);
		ck_assert_msg(strstr(object("\"policies\"", "rusin-v2", b, sizeof(b)), "\"state\": \"absent\""), "%s", b);
		ck_assert_msg(strstr(object("\"policies\"", "single-cap", b, sizeof(b)), "\"state\": \"absent\""), "%s", b);
		return;
	}
	/* auto prefers single-cap; asking for rusin-v2 gets rusin-v2; both verified */
	ck_assert_msg(strstr(d, _i == 0 ? "\"name\": \"single-cap\"" : "\"name\": \"rusin-v2\""), "%s", d);
	ck_assert_msg(strstr(d, "\"verified\": true"), "%s", d);
	ck_assert_msg(strstr(d, "\"state\": \"present\""), "%s", d);
	/* every dialect's policy (backdoor, hypercall, nested allowed) and nested backdoor */
	const char *p = object("\"policies\"", "rusin-v2", b, sizeof(b));
	ck_assert_msg(strstr(p, "\"state\": \"present\"") && strstr(p, "\"value\": 7"), "%s", p);
	p = object("\"policies\"", "single-cap", b, sizeof(b));
	ck_assert_msg(strstr(p, "\"state\": \"present\"") && strstr(p, "\"value\": 7"), "%s", p);
	p = object("\"nested\": {", "backdoor_l0", b, sizeof(b));
	ck_assert_msg(strstr(p, "\"state\": \"present\""), "%s", p);
	p = object("\"nested\": {", "origin", b, sizeof(b));
	ck_assert_msg(strstr(p, "\"state\": \"present\""), "%s", p);
}
END_TEST

int main(void)
{
	const char *want = getenv("VMWKVM_REFKVM");
	if (want && !strcmp(want, "stock")) {
		stock = true;
		int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
		if (fd < 0) {
			fprintf(stderr, "FAIL: VMWKVM_REFKVM=stock but no /dev/kvm\n");
			return 1;
		}
		if (rk_check_ext(fd, RK_CAP_SINGLE) != 0) {
			fprintf(stderr, "FAIL: VMWKVM_REFKVM=stock but cap 903 answers: the reference KVM is loaded\n");
			return 1;
		}
		close(fd);
	} else {
		rk_require("refkvm/test_refkvm_probe");
	}
	Suite *s = suite_create("refkvm_probe");
	TCase *t = tcase_create("probe");
	tcase_set_timeout(t, 120);
	tcase_add_loop_test(t, dialects_reported, 0, 2);
	suite_add_tcase(s, t);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
