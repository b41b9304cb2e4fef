/*
 * vmwkvm-probe: report what this kernel offers a VMware-guest VMM, through libvmwkvm's
 * public probe API (vmwkvm/probe.h). A human table by default, JSON with --json
 * (schema: docs/probe-json-schema.md, "schema_version": 1).
 *
 * Exit status: 0 when /dev/kvm is usable; 1 when it is absent or not permitted (one line
 * on stderr says which); 2 for a usage error; 3 when the probe itself failed.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vmwkvm/vmwkvm.h>

#define PROBE_JSON_SCHEMA_VERSION 1

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: vmwkvm-probe [OPTION]...\n"
		"Report what this Linux kernel offers for running VMware guests on KVM:\n"
		"KVM capabilities, the VMware backdoor and the policy each uAPI dialect would allow,\n"
		"the nested backdoor, userfaultfd, and the library's configuration.\n"
		"\n"
		"  -j, --json           print JSON (schema_version %d, see docs/probe-json-schema.md)\n"
		"  -d, --dialect NAME   evaluate NAME as the active dialect: auto, none, rusin-v2, single-cap\n"
		"                       (default: VMWKVM_DIALECT, else the build default)\n"
		"      --no-scratch-vm  do not create a scratch VM (VM-scope items become unknown)\n"
		"      --no-userfaultfd do not probe userfaultfd\n"
		"  -V, --version        print the library version and exit\n"
		"  -h, --help           print this help and exit\n"
		"\n"
		"Environment: VMWKVM_DIALECT, VMWKVM_PROPOSED (see vmwkvm-probe(1)).\n"
		"Exit status: 0 if /dev/kvm is usable, 1 if it is absent or not permitted,\n"
		"2 for a usage error, 3 if probing failed.\n",
		PROBE_JSON_SCHEMA_VERSION);
}

/* ------------------------------------------------------------------ helpers */

static const char *allow_list(int64_t v, char *buf, size_t len)
{
	buf[0] = '\0';
	if (v & VMWKVM_PROBE_ALLOW_BACKDOOR)
		strncat(buf, "backdoor,", len - strlen(buf) - 1);
	if (v & VMWKVM_PROBE_ALLOW_HYPERCALL)
		strncat(buf, "hypercall,", len - strlen(buf) - 1);
	if (v & VMWKVM_PROBE_ALLOW_NESTED)
		strncat(buf, "nested,", len - strlen(buf) - 1);
	size_t n = strlen(buf);
	if (n)
		buf[n - 1] = '\0';
	else
		snprintf(buf, len, "nothing");
	return buf;
}

static bool is_policy(uint32_t id)
{
	return (id >= VMWKVM_PROBE_VMWARE_POLICY_NONE && id <= VMWKVM_PROBE_VMWARE_POLICY_SINGLE_CAP) ||
	       (id >= VMWKVM_PROBE_NESTED_POLICY_NONE && id <= VMWKVM_PROBE_NESTED_POLICY_SINGLE_CAP);
}

static const char *policy_dialect(uint32_t id)
{
	switch (id) {
	case VMWKVM_PROBE_VMWARE_POLICY_NONE:
	case VMWKVM_PROBE_NESTED_POLICY_NONE: return "none";
	case VMWKVM_PROBE_VMWARE_POLICY_RUSIN_V2:
	case VMWKVM_PROBE_NESTED_POLICY_RUSIN_V2: return "rusin-v2";
	default: return "single-cap";
	}
}

static bool is_uffd_feature(uint32_t id)
{
	return id >= VMWKVM_PROBE_UFFD_WP && id <= VMWKVM_PROBE_UFFD_MOVE;
}

static bool is_proposed(uint32_t id)
{
	return id >= VMWKVM_PROBE_LIB_RUSIN_CAP_BACKDOOR && id <= VMWKVM_PROBE_LIB_SINGLE_EXIT;
}

static const char *value_text(const struct vmwkvm_probe_item *it, char *buf, size_t len)
{
	if (!it->has_value)
		return "-";
	if (is_policy(it->id) && it->group == VMWKVM_PROBE_GROUP_VMWARE)
		return allow_list(it->value, buf, len);
	if (it->id == VMWKVM_PROBE_VMWARE_DIALECT || it->id == VMWKVM_PROBE_LIB_DIALECT_DEFAULT)
		return vmwkvm_dialect_name((int)it->value);
	if (it->id == VMWKVM_PROBE_LIB_VERSION)
		return vmwkvm_version_string();
	if (it->id == VMWKVM_PROBE_UFFD_API || (it->group == VMWKVM_PROBE_GROUP_CAPS && it->value > 9))
		snprintf(buf, len, "0x%" PRIx64, (uint64_t)it->value);
	else if (is_uffd_feature(it->id))
		snprintf(buf, len, "%s", it->value ? "yes" : "no");
	else
		snprintf(buf, len, "%" PRId64, it->value);
	return buf;
}

/* ------------------------------------------------------------------ table */

static void print_table(const vmwkvm_probe *p)
{
	static const uint32_t groups[] = { VMWKVM_PROBE_GROUP_KVM, VMWKVM_PROBE_GROUP_CAPS, VMWKVM_PROBE_GROUP_VMWARE,
					   VMWKVM_PROBE_GROUP_NESTED, VMWKVM_PROBE_GROUP_USERFAULTFD,
					   VMWKVM_PROBE_GROUP_LIBRARY };
	size_t n = vmwkvm_probe_count(p);
	printf("libvmwkvm %s capability probe\n", vmwkvm_version_string());
	for (size_t g = 0; g < sizeof(groups) / sizeof(groups[0]); g++) {
		printf("\n[%s]\n", vmwkvm_probe_group_name(groups[g]));
		printf("  %-24s %-7s %-7s %-14s %s\n", "ITEM", "SCOPE", "STATE", "VALUE", "REASON");
		for (size_t i = 0; i < n; i++) {
			const struct vmwkvm_probe_item *it = vmwkvm_probe_item(p, i);
			if (!it || it->group != groups[g])
				continue;
			char vb[64];
			char key[40];
			if (is_policy(it->id))
				snprintf(key, sizeof(key), "policy[%s]", policy_dialect(it->id));
			else
				snprintf(key, sizeof(key), "%s", it->key);
			printf("  %-24s %-7s %-7s %-14s %s\n", key, vmwkvm_probe_scope_name(it->scope),
			       vmwkvm_probe_state_name(it->state), value_text(it, vb, sizeof(vb)), it->reason);
		}
	}
}

/* ------------------------------------------------------------------ JSON */

static void json_str(const char *s)
{
	putchar('"');
	for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
		switch (*c) {
		case '"': fputs("\\\"", stdout); break;
		case '\\': fputs("\\\\", stdout); break;
		case '\n': fputs("\\n", stdout); break;
		case '\t': fputs("\\t", stdout); break;
		default:
			if (*c < 0x20)
				printf("\\u%04x", *c);
			else
				putchar(*c);
		}
	}
	putchar('"');
}

/* One item as a JSON object (no trailing newline). */
static void json_item(const struct vmwkvm_probe_item *it, int indent)
{
	printf("{\n%*s\"state\": ", indent + 2, "");
	json_str(vmwkvm_probe_state_name(it->state));
	printf(",\n%*s\"scope\": ", indent + 2, "");
	json_str(vmwkvm_probe_scope_name(it->scope));
	printf(",\n%*s\"value\": ", indent + 2, "");
	if (it->has_value)
		printf("%" PRId64, it->value);
	else
		fputs("null", stdout);
	if (it->number)
		printf(",\n%*s\"number\": %u", indent + 2, "", it->number);
	printf(",\n%*s\"errno\": ", indent + 2, "");
	if (it->err)
		json_str(vmwkvm_errno_name(it->err));
	else
		fputs("null", stdout);
	if (is_policy(it->id)) {
		printf(",\n%*s\"dialect\": ", indent + 2, "");
		json_str(policy_dialect(it->id));
		if (it->group == VMWKVM_PROBE_GROUP_VMWARE) {
			printf(",\n%*s\"allow\": [", indent + 2, "");
			int k = 0;
			if (it->has_value && (it->value & VMWKVM_PROBE_ALLOW_BACKDOOR))
				printf("%s\"backdoor\"", k++ ? ", " : "");
			if (it->has_value && (it->value & VMWKVM_PROBE_ALLOW_HYPERCALL))
				printf("%s\"hypercall\"", k++ ? ", " : "");
			if (it->has_value && (it->value & VMWKVM_PROBE_ALLOW_NESTED))
				printf("%s\"nested\"", k++ ? ", " : "");
			putchar(']');
		}
	}
	if (it->id == VMWKVM_PROBE_VMWARE_DIALECT || it->id == VMWKVM_PROBE_LIB_DIALECT_DEFAULT) {
		printf(",\n%*s\"name\": ", indent + 2, "");
		json_str(it->has_value ? vmwkvm_dialect_name((int)it->value) : "unknown");
	}
	if (it->id == VMWKVM_PROBE_VMWARE_DIALECT)
		printf(",\n%*s\"verified\": %s", indent + 2, "", it->state == VMWKVM_PROBE_PRESENT ? "true" : "false");
	if (it->id == VMWKVM_PROBE_LIB_VERSION) {
		printf(",\n%*s\"string\": ", indent + 2, "");
		json_str(vmwkvm_version_string());
	}
	printf(",\n%*s\"reason\": ", indent + 2, "");
	json_str(it->reason);
	printf("\n%*s}", indent, "");
}

/* Print `"key": ` at indent, with a separating comma when needed. */
static void json_key(int *first, int indent, const char *key)
{
	printf("%s\n%*s", *first ? "" : ",", indent, "");
	*first = 0;
	json_str(key);
	fputs(": ", stdout);
}

/* Items of one group matching pred (or all when pred is NULL), keyed by item key. */
static void json_items(const vmwkvm_probe *p, uint32_t group, bool (*pred)(uint32_t), bool negate, int indent,
		       int *first, bool key_by_dialect)
{
	size_t n = vmwkvm_probe_count(p);
	for (size_t i = 0; i < n; i++) {
		const struct vmwkvm_probe_item *it = vmwkvm_probe_item(p, i);
		if (!it || it->group != group)
			continue;
		bool m = pred ? pred(it->id) : true;
		if (negate)
			m = !m;
		if (!m)
			continue;
		json_key(first, indent, key_by_dialect ? policy_dialect(it->id) : it->key);
		json_item(it, indent);
	}
}

static void json_caps(const vmwkvm_probe *p, int indent)
{
	size_t n = vmwkvm_probe_count(p);
	int first = 1;
	for (size_t i = 0; i < n; i++) {
		const struct vmwkvm_probe_item *it = vmwkvm_probe_item(p, i);
		if (!it || it->group != VMWKVM_PROBE_GROUP_CAPS || it->scope != VMWKVM_PROBE_SCOPE_SYSTEM)
			continue;
		json_key(&first, indent, it->key);
		printf("{\n%*s\"number\": %u,\n%*s\"system\": ", indent + 2, "", it->number, indent + 2, "");
		json_item(it, indent + 2);
		const struct vmwkvm_probe_item *vm = vmwkvm_probe_find(p, it->id, VMWKVM_PROBE_SCOPE_VM);
		if (vm) {
			printf(",\n%*s\"vm\": ", indent + 2, "");
			json_item(vm, indent + 2);
		}
		printf("\n%*s}", indent, "");
	}
}

static void print_json(const vmwkvm_probe *p)
{
	int top = 1;
	fputs("{", stdout);
	json_key(&top, 2, "schema_version");
	printf("%d", PROBE_JSON_SCHEMA_VERSION);
	json_key(&top, 2, "generator");
	char gen[64];
	snprintf(gen, sizeof(gen), "vmwkvm-probe %s", vmwkvm_version_string());
	json_str(gen);
	json_key(&top, 2, "kvm_usable");
	fputs(vmwkvm_probe_kvm_usable(p) == 1 ? "true" : "false", stdout);

	int first;
	json_key(&top, 2, "kvm");
	first = 1;
	fputs("{", stdout);
	json_items(p, VMWKVM_PROBE_GROUP_KVM, NULL, false, 4, &first, false);
	fputs("\n  }", stdout);

	json_key(&top, 2, "caps");
	fputs("{", stdout);
	json_caps(p, 4);
	fputs("\n  }", stdout);

	json_key(&top, 2, "vmware");
	first = 1;
	fputs("{", stdout);
	json_items(p, VMWKVM_PROBE_GROUP_VMWARE, is_policy, true, 4, &first, false);
	json_key(&first, 4, "policies");
	fputs("{", stdout);
	int f2 = 1;
	json_items(p, VMWKVM_PROBE_GROUP_VMWARE, is_policy, false, 6, &f2, true);
	fputs("\n    }\n  }", stdout);

	json_key(&top, 2, "nested");
	first = 1;
	fputs("{", stdout);
	json_items(p, VMWKVM_PROBE_GROUP_NESTED, is_policy, true, 4, &first, false);
	json_key(&first, 4, "policies");
	fputs("{", stdout);
	f2 = 1;
	json_items(p, VMWKVM_PROBE_GROUP_NESTED, is_policy, false, 6, &f2, true);
	fputs("\n    }\n  }", stdout);

	json_key(&top, 2, "userfaultfd");
	first = 1;
	fputs("{", stdout);
	json_items(p, VMWKVM_PROBE_GROUP_USERFAULTFD, is_uffd_feature, true, 4, &first, false);
	json_key(&first, 4, "features");
	fputs("{", stdout);
	f2 = 1;
	json_items(p, VMWKVM_PROBE_GROUP_USERFAULTFD, is_uffd_feature, false, 6, &f2, false);
	fputs("\n    }\n  }", stdout);

	json_key(&top, 2, "library");
	first = 1;
	fputs("{", stdout);
	json_items(p, VMWKVM_PROBE_GROUP_LIBRARY, is_proposed, true, 4, &first, false);
	json_key(&first, 4, "proposed");
	fputs("{", stdout);
	f2 = 1;
	json_items(p, VMWKVM_PROBE_GROUP_LIBRARY, is_proposed, false, 6, &f2, false);
	fputs("\n    }\n  }", stdout);
	fputs("\n}\n", stdout);
}

/* The one stderr line when /dev/kvm cannot be used. */
static void explain_unusable(const vmwkvm_probe *p)
{
	const struct vmwkvm_probe_item *dev = vmwkvm_probe_find(p, VMWKVM_PROBE_KVM_DEVICE, VMWKVM_PROBE_SCOPE_HOST);
	const struct vmwkvm_probe_item *api = vmwkvm_probe_find(p, VMWKVM_PROBE_KVM_API_VERSION, VMWKVM_PROBE_SCOPE_SYSTEM);
	if (!dev) {
		fprintf(stderr, "vmwkvm-probe: /dev/kvm is not usable (the probe has no answer)\n");
	} else if (dev->state != VMWKVM_PROBE_PRESENT) {
		int e = -dev->err;
		if (e == ENOENT || e == ENODEV || e == ENXIO || e == ENOTDIR)
			fprintf(stderr, "vmwkvm-probe: /dev/kvm is absent (%s): this kernel offers no KVM to this machine\n",
				vmwkvm_errno_name(e));
		else if (e == EACCES || e == EPERM)
			fprintf(stderr,
				"vmwkvm-probe: /dev/kvm is not permitted (%s): run as root or join the group that owns /dev/kvm\n",
				vmwkvm_errno_name(e));
		else
			fprintf(stderr, "vmwkvm-probe: /dev/kvm cannot be opened: %s\n", dev->reason);
	} else {
		fprintf(stderr, "vmwkvm-probe: /dev/kvm is not usable: %s\n", api ? api->reason : "no API version");
	}
}

int main(int argc, char **argv)
{
	enum { OPT_NO_SCRATCH = 1000, OPT_NO_UFFD };
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "dialect", required_argument, NULL, 'd' },
		{ "no-scratch-vm", no_argument, NULL, OPT_NO_SCRATCH },
		{ "no-userfaultfd", no_argument, NULL, OPT_NO_UFFD },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	bool json = false;
	struct vmwkvm_probe_opts opts;
	memset(&opts, 0, sizeof(opts));
	opts.sz = sizeof(opts);
	int c;
	while ((c = getopt_long(argc, argv, "jd:Vh", longopts, NULL)) != -1) {
		switch (c) {
		case 'j': json = true; break;
		case 'd':
			if (vmwkvm_dialect_from_name(optarg) == -EINVAL) {
				fprintf(stderr, "vmwkvm-probe: unknown dialect '%s' (auto, none, rusin-v2, single-cap)\n", optarg);
				return 2;
			}
			opts.dialect = optarg;
			break;
		case OPT_NO_SCRATCH: opts.flags |= VMWKVM_PROBE_F_NO_SCRATCH_VM; break;
		case OPT_NO_UFFD: opts.flags |= VMWKVM_PROBE_F_NO_USERFAULTFD; break;
		case 'V': printf("vmwkvm-probe (libvmwkvm) %s\n", vmwkvm_version_string()); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "vmwkvm-probe: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	vmwkvm_probe *p = NULL;
	int r = vmwkvm_probe_new(&opts, &p);
	if (r < 0) {
		fprintf(stderr, "vmwkvm-probe: probing failed: %s\n", vmwkvm_strerror(r));
		return 3;
	}
	if (json)
		print_json(p);
	else
		print_table(p);
	fflush(stdout);
	int usable = vmwkvm_probe_kvm_usable(p);
	if (usable != 1)
		explain_unusable(p);
	vmwkvm_probe_free(p);
	return usable == 1 ? 0 : 1;
}
