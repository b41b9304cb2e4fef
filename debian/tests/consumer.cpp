// A C++ program built against the installed libvmwkvm-dev: the headers must be valid C++
// (extern "C", no C-only constructs) and the symbols must link from C++.
#include <cerrno>
#include <cstdio>
#include <cstring>

#include <vmwkvm/vmwkvm.h>

int main()
{
	bool ok = vmwkvm_version() == VMWKVM_VERSION_HEX &&
		  std::strcmp(vmwkvm_version_string(), VMWKVM_VERSION_STRING) == 0;
	vmwkvm_vm *vm = nullptr;
	ok = ok && vmwkvm_vm_new(-1, nullptr, &vm) == -EINVAL && vm == nullptr;
	struct vmwkvm_vm_opts opts {};
	opts.sz = sizeof(opts);
	opts.dialect = "no-such-dialect";
	ok = ok && vmwkvm_vm_new(0, &opts, &vm) == -EINVAL;
	ok = ok && std::strcmp(vmwkvm_dialect_name(VMWKVM_DIALECT_SINGLE_CAP), "single-cap") == 0;
	std::printf("libvmwkvm %s from C++: %s\n", vmwkvm_version_string(), ok ? "ok" : "FAILED");
	return ok ? 0 : 1;
}
