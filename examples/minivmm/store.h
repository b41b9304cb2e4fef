/*
 * vmwkvm-minivmm: the --guestinfo-dump format and guestinfo key checks (pure; unit-tested
 * by tests/integration/test_minivmm_options.c). The guestinfo store itself is the
 * library's (vmwkvm_tools_info_get/_set/_key).
 *
 * Keys are the part after "guestinfo.": 1..MVM_STORE_MAX_KEY bytes of printable ASCII
 * without space, '=' or '\'. The dump writes one line per key, sorted by key:
 * KEY=VALUE, with '\' written as "\\", newline as "\n", carriage return as "\r", and
 * other bytes outside printable ASCII as "\xHH".
 */
#ifndef MINIVMM_STORE_H
#define MINIVMM_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define MVM_STORE_MAX_KEY 128

/* One guestinfo entry for the dump. */
struct mvm_kv {
	char *key;        /* without "guestinfo.", NUL-terminated */
	char *value;      /* value_len bytes (they may contain NULs) */
	size_t value_len;
};

/* Whether key[0..len) is a valid key. */
bool mvm_store_key_ok(const char *key, size_t len);

/* Write the dump (see above) of n entries, sorting the array by key. 0, or -errno. */
int mvm_store_dump(struct mvm_kv *entries, size_t n, FILE *f);

/* Write len bytes to f escaped as in the dump. 0 or -errno. */
int mvm_escape(FILE *f, const char *data, size_t len);

#endif
