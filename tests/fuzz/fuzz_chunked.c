/*
** fuzz_chunked.c -- libFuzzer target for the chunked body decoder
** (chunked_step in host/http_parse.c), driven from C without a Stream.
**
** The input is decoded three ways: in one piece; split into pieces of
** pseudo-random sizes (seeded from the input, so a crash reproduces); and
** with the output limited to a few bytes per call, as a slow reader does.
** All three must give the same data, the same verdict (done, malformed or
** wanting more) and, when done, end at the same byte. Beyond that: the data
** is never more than the input, a finished body ends with CRLF, and an
** input with no CR at all can never complete a body. Any broken rule aborts.
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

typedef struct {
  char *p;
  size_t n, cap;
} buf_t;

static void emit(void *ud, const char *data, size_t n) {
  buf_t *b = (buf_t *)ud;
  if (b->n + n > b->cap) {
    b->cap = (b->n + n) * 2 + 64;
    b->p = (char *)realloc(b->p, b->cap);
    if (!b->p) abort();
  }
  memcpy(b->p + b->n, data, n);
  b->n += n;
}

enum { MORE, DONE, BAD };

typedef struct {
  buf_t out;
  int verdict;
  size_t used; /* input bytes taken when the verdict was reached */
} result_t;

/* Feed in[0..n) in pieces; piece(i) gives the size of the next one and
** max(i) the output allowed per call. */
static void decode(result_t *r, const uint8_t *in, size_t n, uint32_t seed, int small_out) {
  chunked_t c;
  size_t pos = 0;
  uint32_t x = seed | 1;
  memset(r, 0, sizeof *r);
  chunked_init(&c);
  while (pos < n) {
    size_t piece = n - pos, off = 0;
    if (seed) {
      x ^= x << 13, x ^= x >> 17, x ^= x << 5; /* xorshift32 */
      piece = 1 + x % (piece < 17 ? piece : 17);
    }
    while (off < piece) { /* one piece, called until it is used up */
      const char *err = NULL;
      size_t max = small_out ? 1 + (pos + off) % 5 : (size_t)-1;
      size_t used = chunked_step(&c, (const char *)in + pos + off, piece - off, max, emit,
                                 &r->out, &err);
      off += used;
      if (err) {
        r->verdict = BAD;
        r->used = pos + off;
        return;
      }
      if (chunked_done(&c)) {
        r->verdict = DONE;
        r->used = pos + off;
        return;
      }
      if (used == 0) abort(); /* no progress, no error, not done */
    }
    pos += piece;
  }
  r->verdict = MORE;
  r->used = n;
}

static void same(const result_t *a, const result_t *b, const char *what) {
  if (a->verdict != b->verdict || a->out.n != b->out.n ||
      (a->out.n && memcmp(a->out.p, b->out.p, a->out.n) != 0) ||
      (a->verdict == DONE && a->used != b->used)) {
    fprintf(stderr, "fuzz_chunked: %s differs: verdict %d/%d, out %zu/%zu, used %zu/%zu\n",
            what, a->verdict, b->verdict, a->out.n, b->out.n, a->used, b->used);
    abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  result_t whole, split, slow;
  uint32_t seed = 2166136261u;
  size_t i;
  for (i = 0; i < size; i++) seed = (seed ^ data[i]) * 16777619u; /* FNV-1a */
  decode(&whole, data, size, 0, 0);
  decode(&split, data, size, seed, 0);
  decode(&slow, data, size, seed ^ 0x9e3779b9u, 1);
  same(&whole, &split, "split input");
  same(&whole, &slow, "limited output");
  if (whole.out.n > size) abort();
  if (whole.verdict == DONE) {
    if (whole.used < 5 || memcmp(data + whole.used - 2, "\r\n", 2) != 0) abort();
    if (whole.out.n + 5 > whole.used) abort(); /* framing costs at least "0\r\n\r\n" */
  }
  if (whole.verdict == DONE && !memchr(data, '\r', size)) abort();
  free(whole.out.p);
  free(split.out.p);
  free(slow.out.p);
  return 0;
}
