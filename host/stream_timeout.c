/*
** stream_timeout.c -- the send timeout of a Stream: a peer that stops
** reading must not hold a connection, its queued bytes and whatever the
** writer holds (an open file) forever.
**
** While bytes are queued, the stream has an entry in the runtime's deadline
** heap (TE_SEND). Write callbacks only note the time of the progress (no
** heap work on the hot path); when the entry fires, a stream that made
** progress since is re-armed from that time, one that did not is aborted:
** the waiting writers and flushers raise "timeout", the unsent bytes are
** dropped and the connection is reset. As nginx's send_timeout, it bounds
** the time between two successive bits of progress, not the whole send.
*/
#include "internal.h"

/* s:close() on a stream without a send timeout waits this long without
** progress for its queued bytes, then aborts (see s_close). */
#define CLOSE_LINGER 30.0

/* Put the entry in the heap, due timeout seconds after the last progress. */
static void arm(stream_t *s) {
  s->wtm.kind = TE_SEND;
  s->wtm.due = s->wlast + (uint64_t)(s->wtimeout * 1e9);
  heap_push(s->rt, &s->wtm);
}

/* A write was queued (s->wqueued > 0): start counting if not yet. */
void stream_send_queued(stream_t *s) {
  if (s->wtimeout <= 0 || s->wtm.idx || s->closed) return;
  s->wlast = uv_hrtime();
  arm(s);
}

/* A queued write completed: progress. Nothing queued: stop counting. */
void stream_send_progress(stream_t *s) {
  if (!s->wtm.idx) return;
  if (s->wqueued == 0) heap_remove(s->rt, &s->wtm);
  else s->wlast = uv_hrtime();
}

/* The stream closes: leave the heap. */
void stream_send_stop(stream_t *s) {
  if (s->wtm.idx) heap_remove(s->rt, &s->wtm);
}

/* The entry is due (popped by timer_cb): re-arm after progress, or abort. */
void stream_send_fired(loom_t *rt, stream_t *s) {
  task_t *t;
  if (s->closed || s->wqueued == 0) return;
  if (uv_hrtime() < s->wlast + (uint64_t)(s->wtimeout * 1e9)) {
    arm(s);
    return;
  }
  if (!s->werr) s->werr = UV_ETIMEDOUT;
  while ((t = tlist_pop(&s->writers)) != NULL || (t = tlist_pop(&s->flushers)) != NULL)
    task_wake_err(rt, t, "timeout", "ETIMEDOUT",
                  "send timed out: no write progress for %g s", s->wtimeout);
  s->reset = 1;
  stream_close(s);
}

/* s:set_send_timeout(secs): abort the connection when queued bytes make
** no progress for secs seconds; nil or 0 turns it off. */
int stream_set_send_timeout(lua_State *L) {
  stream_t *s = stream_check(L, 1);
  double secs = luaL_optnumber(L, 2, 0);
  luaL_argcheck(L, secs >= 0 && secs < 1e9, 2, "must be a number of seconds >= 0");
  stream_send_stop(s);
  s->wtimeout = secs;
  if (s->wqueued) stream_send_queued(s);
  return 0;
}

/* For s:close() about to wait for its queued bytes: bound the wait by the
** send timeout, or by CLOSE_LINGER when the stream has none. */
void stream_send_linger(stream_t *s) {
  if (s->wtimeout > 0) return;
  s->wtimeout = CLOSE_LINGER;
  stream_send_queued(s);
}
