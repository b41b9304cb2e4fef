/*
 * vmwkvm-minivmm: the guestinfo dump format and key checks (see store.h).
 */
#include "store.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

bool mvm_store_key_ok(const char *key, size_t len)
{
	if (!key || len == 0 || len > MVM_STORE_MAX_KEY)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)key[i];
		if (c <= ' ' || c >= 0x7F || c == '=' || c == '\\')
			return false;
	}
	return true;
}

int mvm_escape(FILE *f, const char *data, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)data[i];
		int r;
		if (c == '\\')
			r = fputs("\\\\", f);
		else if (c == '\n')
			r = fputs("\\n", f);
		else if (c == '\r')
			r = fputs("\\r", f);
		else if (c < 0x20 || c >= 0x7F)
			r = fprintf(f, "\\x%02x", c);
		else
			r = fputc(c, f);
		if (r < 0)
			return -EIO;
	}
	return 0;
}

static int kv_cmp(const void *a, const void *b)
{
	return strcmp(((const struct mvm_kv *)a)->key, ((const struct mvm_kv *)b)->key);
}

int mvm_store_dump(struct mvm_kv *entries, size_t n, FILE *f)
{
	if (n)
		qsort(entries, n, sizeof(*entries), kv_cmp);
	for (size_t i = 0; i < n; i++) {
		if (fputs(entries[i].key, f) < 0 || fputc('=', f) < 0)
			return -EIO;
		int r = mvm_escape(f, entries[i].value, entries[i].value_len);
		if (r < 0)
			return r;
		if (fputc('\n', f) < 0)
			return -EIO;
	}
	return 0;
}
