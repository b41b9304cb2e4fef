/*
 * vmwkvm-minivmm: the guestinfo store (see store.h).
 */
#include "store.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void mvm_store_init(struct mvm_store *s)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->lock, NULL);
}

void mvm_store_destroy(struct mvm_store *s)
{
	for (size_t i = 0; i < s->n; i++) {
		free(s->entries[i].key);
		free(s->entries[i].value);
	}
	s->n = 0;
	pthread_mutex_destroy(&s->lock);
}

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

/* Index of key, or -(insertion point) - 1. Caller holds the lock. */
static long find(const struct mvm_store *s, const char *key, size_t key_len)
{
	size_t lo = 0, hi = s->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const char *k = s->entries[mid].key;
		size_t klen = strlen(k);
		int c = memcmp(k, key, klen < key_len ? klen : key_len);
		if (c == 0)
			c = klen < key_len ? -1 : (klen > key_len ? 1 : 0);
		if (c == 0)
			return (long)mid;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -(long)lo - 1;
}

int mvm_store_set(struct mvm_store *s, const char *key, size_t key_len, const char *value, size_t value_len)
{
	if (!s || !mvm_store_key_ok(key, key_len) || (!value && value_len))
		return -EINVAL;
	if (value_len > MVM_STORE_MAX_VALUE)
		return -E2BIG;
	char *v = malloc(value_len + 1);
	if (!v)
		return -ENOMEM;
	if (value_len)
		memcpy(v, value, value_len);
	v[value_len] = '\0';

	pthread_mutex_lock(&s->lock);
	long at = find(s, key, key_len);
	if (at >= 0) {
		free(s->entries[at].value);
		s->entries[at].value = v;
		s->entries[at].value_len = value_len;
		pthread_mutex_unlock(&s->lock);
		return 0;
	}
	if (s->n == MVM_STORE_MAX_KEYS) {
		pthread_mutex_unlock(&s->lock);
		free(v);
		return -ENOSPC;
	}
	char *k = malloc(key_len + 1);
	if (!k) {
		pthread_mutex_unlock(&s->lock);
		free(v);
		return -ENOMEM;
	}
	memcpy(k, key, key_len);
	k[key_len] = '\0';
	size_t pos = (size_t)(-at - 1);
	memmove(&s->entries[pos + 1], &s->entries[pos], (s->n - pos) * sizeof(s->entries[0]));
	s->entries[pos].key = k;
	s->entries[pos].value = v;
	s->entries[pos].value_len = value_len;
	s->n++;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

long mvm_store_get(struct mvm_store *s, const char *key, size_t key_len, char *buf, size_t cap)
{
	if (!s || !key || (!buf && cap))
		return -EINVAL;
	if (!mvm_store_key_ok(key, key_len))
		return -ENOENT;
	pthread_mutex_lock(&s->lock);
	long at = find(s, key, key_len);
	if (at < 0) {
		pthread_mutex_unlock(&s->lock);
		return -ENOENT;
	}
	size_t len = s->entries[at].value_len;
	if (cap)
		memcpy(buf, s->entries[at].value, len < cap ? len : cap);
	pthread_mutex_unlock(&s->lock);
	return (long)len;
}

size_t mvm_store_count(struct mvm_store *s)
{
	pthread_mutex_lock(&s->lock);
	size_t n = s->n;
	pthread_mutex_unlock(&s->lock);
	return n;
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

int mvm_store_dump(struct mvm_store *s, FILE *f)
{
	int r = 0;
	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->n && r == 0; i++) {
		if (fputs(s->entries[i].key, f) < 0 || fputc('=', f) < 0)
			r = -EIO;
		else if ((r = mvm_escape(f, s->entries[i].value, s->entries[i].value_len)) == 0 && fputc('\n', f) < 0)
			r = -EIO;
	}
	pthread_mutex_unlock(&s->lock);
	return r;
}
