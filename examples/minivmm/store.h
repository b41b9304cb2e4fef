/*
 * vmwkvm-minivmm: the guestinfo store behind info-set / info-get (pure, thread-safe;
 * unit-tested by tests/integration/test_minivmm_options.c).
 *
 * Keys are the part after "guestinfo.": 1..MVM_STORE_MAX_KEY bytes of printable ASCII
 * without space, '=' or '\'. Values are any bytes, at most MVM_STORE_MAX_VALUE. At most
 * MVM_STORE_MAX_KEYS keys. The dump writes one line per key, sorted by key:
 * KEY=VALUE, with '\' written as "\\", newline as "\n", carriage return as "\r", and
 * other bytes outside printable ASCII as "\xHH".
 */
#ifndef MINIVMM_STORE_H
#define MINIVMM_STORE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define MVM_STORE_MAX_KEYS 256
#define MVM_STORE_MAX_KEY 128
#define MVM_STORE_MAX_VALUE 4096

struct mvm_store_entry {
	char *key;      /* NUL-terminated */
	char *value;    /* NUL after value_len (it may contain NULs) */
	size_t value_len;
};

struct mvm_store {
	pthread_mutex_t lock;
	struct mvm_store_entry entries[MVM_STORE_MAX_KEYS]; /* sorted by key */
	size_t n;
};

void mvm_store_init(struct mvm_store *s);
void mvm_store_destroy(struct mvm_store *s);

/* Whether key[0..len) is a valid key. */
bool mvm_store_key_ok(const char *key, size_t len);

/* Set (or replace) a key. 0; -EINVAL bad key, -E2BIG value too long, -ENOSPC store full, -ENOMEM. */
int mvm_store_set(struct mvm_store *s, const char *key, size_t key_len, const char *value, size_t value_len);

/* Copy a value into buf (at most cap bytes, no NUL added). Returns the value's length
 * (which may exceed cap: then only cap bytes were copied), -ENOENT, or -EINVAL. */
long mvm_store_get(struct mvm_store *s, const char *key, size_t key_len, char *buf, size_t cap);

/* Number of keys. */
size_t mvm_store_count(struct mvm_store *s);

/* Write the dump (see above). 0, or -errno of the write. */
int mvm_store_dump(struct mvm_store *s, FILE *f);

/* Write len bytes to f escaped as in the dump. 0 or -errno. */
int mvm_escape(FILE *f, const char *data, size_t len);

#endif
