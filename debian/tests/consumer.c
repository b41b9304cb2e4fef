/* A C program built against the installed libvmwkvm-dev, as a VMM would be: it must
 * compile with the installed headers only, link with -lvmwkvm, and run without /dev/kvm. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <vmwkvm/vmwkvm.h>

int main(void)
{
	int bad = 0;
	if (vmwkvm_version() != VMWKVM_VERSION_HEX) {
		fprintf(stderr, "library %s, headers %s\n", vmwkvm_version_string(), VMWKVM_VERSION_STRING);
		bad = 1;
	}
	if (strcmp(vmwkvm_version_string(), VMWKVM_VERSION_STRING) != 0)
		bad = 1;
	if (!VMWKVM_CHECK_VERSION(0, 1, 0))
		bad = 1;
	/* the error convention: negative errno, never a crash on bad input */
	vmwkvm_vm *vm = NULL;
	if (vmwkvm_vm_new(-1, NULL, &vm) != -EINVAL || vm != NULL)
		bad = 1;
	if (vmwkvm_dialect_from_name("rusin-v2") != VMWKVM_DIALECT_RUSIN_V2)
		bad = 1;
	struct vmwkvm_call call;
	if (vmwkvm_exit_decode(NULL, &call) != -EINVAL)
		bad = 1;
	printf("libvmwkvm %s from C: %s (%s)\n", vmwkvm_version_string(), bad ? "FAILED" : "ok",
	       vmwkvm_strerror(-EINVAL));
	return bad;
}
