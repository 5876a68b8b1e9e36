/* queue/redis.c - the `redis://HOST:PORT/STREAM?group=NAME` queue driver
 *
 * A Redis Stream with a consumer group; each runner is a consumer.
 *
 *   STREAM                 jobs: entries {job, body}; an entry is deleted
 *                          (XDEL) once it is acknowledged, so the stream
 *                          holds exactly the queued and leased jobs
 *   group NAME             (default "buildvm"), created at `0` with MKSTREAM
 *   STREAM:job:<id>        a hash per job: state (queued|running|done|dead),
 *                          msg (the entry that owns the job), attempt, owner,
 *                          request, record, reason, cancel, *_at times
 *   STREAM:results         one entry per finished job: {job, msg, state,
 *                          attempt, at, record, reason}
 *   STREAM:dead            dead letters: {job, msg, reason, attempt, owner,
 *                          at, body, record}
 *
 * Attempts and fencing: the attempt number is the entry's delivery count in
 * the group's pending entries list (XPENDING). Reading an entry (XREADGROUP,
 * also the re-read of one's own pending entries) and taking it over
 * (XAUTOCLAIM) add one; a heartbeat (XCLAIM ... JUSTID to oneself) does not.
 * An operation of attempt N is allowed only while the entry is pending to
 * its owner with delivery count N; the check and the change it guards run in
 * one Lua script, so a takeover cannot slip in between.
 *
 * Release parks the entry on the pseudo-consumer "(parked)" with an idle
 * time of "forever" (XCLAIM ... TIME 0 JUSTID): the next XAUTOCLAIM of any
 * runner takes it at once, with delivery count N+1. A consumer name can
 * never contain parentheses, so no runner is ever called that.
 *
 * Terminal writes (hash, results, dead stream) and the XACK/XDEL that
 * acknowledge them happen in one script: redis applies and persists (AOF)
 * a script as a unit, so there is no state with the ack but no record.
 *
 * Scripts compute `STREAM:job:<id>` keys only for ids they validate and
 * otherwise use the keys they are given; the layout assumes one redis
 * instance, not a cluster. The handle holds one connection, reconnects once
 * when it breaks and is not thread-safe.
 */
#include "queue_int.h"
#include "jsonx.h"
#include "util.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#define RQ_DEFAULT_PORT 6379
#define RQ_DEFAULT_STREAM "buildvm"
#define RQ_DEFAULT_GROUP "buildvm"
#define RQ_PARK "(parked)"
#define RQ_STREAM_MAX 128
#define RQ_GROUP_MAX 64
#define RQ_ENTRY_MAX (JOB_REQUEST_MAX_BYTES + 1024) /* body and field names */
#define RQ_KEEP "10000"   /* approximate length of the results and dead streams */
#define RQ_LEASE_LOOPS 64 /* messages looked at per lease call */

struct rq
{
  struct queue q;
  redisContext *c;
  char *host;
  int port;
  char *stream, *group;
  char *dead, *results;
  bool recovered; /* this consumer's own pending entries were re-read */
  char own_cursor[64];
};

static struct rq *
R (struct queue *q)
{
  return (struct rq *) q;
}

/* --- URL ------------------------------------------------------------------ */

static const char *
name_problem (const char *s, size_t n, size_t max)
{
  static const char why[] = "must be 1 to max bytes of [A-Za-z0-9._-]";
  if (n == 0 || n > max)
    return why;
  for (size_t i = 0; i < n; i++)
    if (!(is_alnum (s[i]) || s[i] == '.' || s[i] == '_' || s[i] == '-'))
      return why;
  return NULL;
}

/* "redis://host[:port][/STREAM][?group=GROUP]", the one grammar of a redis
 * queue URL (the config checks it through queue_url_check). */
static const char *
rq_check_url (const char *url)
{
  const char *hp = url + strlen ("redis://"), *p, *why;
  size_t n = strcspn (hp, "/?#");

  if (memchr (hp, '@', n) != NULL)
    return "must not contain credentials";
  if ((why = hostport_problem (hp, n)) != NULL)
    return why;
  p = hp + n;
  if (*p == '/')
    {
      size_t m = strcspn (p + 1, "?#");
      if (name_problem (p + 1, m, RQ_STREAM_MAX) != NULL)
        return "has an invalid stream name (^[A-Za-z0-9._-]{1,128}$)";
      p += 1 + m;
    }
  if (*p == '?')
    {
      if (strncmp (p, "?group=", 7) != 0
          || name_problem (p + 7, strlen (p + 7), RQ_GROUP_MAX) != NULL)
        return "may only have the query `?group=NAME` (^[A-Za-z0-9._-]{1,64}$)";
      p += strlen (p);
    }
  if (*p != '\0')
    return "has trailing characters after the redis URL";
  return NULL;
}

/* Split a URL that rq_check_url accepted. */
static int
parse_url (struct rq *r, const char *url, bvm_error_t *err)
{
  const char *hp = url + strlen ("redis://"), *p, *colon = NULL, *hend, *why;
  size_t n = strcspn (hp, "/?#");
  uint32_t port = RQ_DEFAULT_PORT;
  char portbuf[8];

  if ((why = rq_check_url (url)) != NULL)
    return bvm_error_code (err, BVM_E_INVALID, 0, "the redis URL %s", why);
  hend = hp + n;
  if (hp[0] == '[')
    {
      const char *rb = memchr (hp, ']', n);
      r->host = strndup (hp + 1, (size_t) (rb - hp - 1));
      colon = rb + 1 < hend ? rb + 1 : NULL;
    }
  else
    {
      colon = memchr (hp, ':', n);
      r->host = strndup (hp, colon ? (size_t) (colon - hp) : n);
    }
  if (r->host == NULL)
    return bvm_error (err, ENOMEM, "redis URL");
  if (colon != NULL)
    {
      size_t pl = (size_t) (hend - colon - 1); /* 1 to 5 digits, checked */
      memcpy (portbuf, colon + 1, pl);
      portbuf[pl] = '\0';
      if (parse_u32 (portbuf, &port) < 0)
        return bvm_error_code (err, BVM_E_INVALID, 0, "bad redis port `%s`", portbuf);
    }
  r->port = (int) port;
  p = hend;
  if (*p == '/')
    {
      size_t m = strcspn (p + 1, "?#");
      if ((r->stream = strndup (p + 1, m)) == NULL)
        return bvm_error (err, ENOMEM, "redis URL");
      p += 1 + m;
    }
  if (*p == '?')
    r->group = strdup (p + 7);
  if (r->stream == NULL)
    r->stream = strdup (RQ_DEFAULT_STREAM);
  if (r->group == NULL)
    r->group = strdup (RQ_DEFAULT_GROUP);
  if (r->stream == NULL || r->group == NULL || asprintf (&r->dead, "%s:dead", r->stream) < 0
      || asprintf (&r->results, "%s:results", r->stream) < 0)
    return bvm_error (err, ENOMEM, "redis URL");
  return 0;
}

/* --- connection and commands ---------------------------------------------- */

static struct timeval
tv_of (int64_t ms)
{
  struct timeval tv = { (time_t) (ms / 1000), (suseconds_t) ((ms % 1000) * 1000) };
  return tv;
}

static int
rq_connect (struct rq *r, bvm_error_t *err)
{
  redisReply *rep;

  if (r->c != NULL)
    redisFree (r->c);
  r->c = redisConnectWithTimeout (r->host, r->port, tv_of (r->q.timeout_ms));
  if (r->c == NULL)
    return bvm_error (err, ENOMEM, "redis connection");
  if (r->c->err)
    {
      int ret = bvm_error_code (err, BVM_E_NETWORK, 0, "connect to redis `%s:%d`: %s", r->host,
                                r->port, r->c->errstr);
      redisFree (r->c);
      r->c = NULL;
      return ret;
    }
  redisSetTimeout (r->c, tv_of (r->q.timeout_ms));
  redisEnableKeepAlive (r->c);
  /* CLIENT LIST then shows which runner a connection belongs to */
  rep = redisCommand (r->c, "CLIENT SETNAME buildvm:%s", r->q.consumer);
  if (rep == NULL)
    {
      int ret = bvm_error_code (err, BVM_E_NETWORK, 0, "redis `%s:%d`: %s", r->host, r->port,
                                r->c->errstr);
      redisFree (r->c);
      r->c = NULL;
      return ret;
    }
  freeReplyObject (rep);
  return 0;
}

static void
reply_freep (redisReply **r)
{
  if (*r != NULL)
    freeReplyObject (*r);
}
#define cleanup_reply __attribute__ ((cleanup (reply_freep)))

static int create_group (struct rq *r, bvm_error_t *err);

/* Run one command. A broken connection is re-established and the command
 * sent once more; every command and script here is safe to repeat (see the
 * scripts' "retry" branches). A group that vanished (an operator deleted the
 * stream) is created again. Error replies are BVM_E_NETWORK. */
static int
rq_cmd (redisReply **out, struct rq *r, int argc, const char **argv, const size_t *lens,
        bvm_error_t *err)
{
  char show[QUEUE__SHOW_SIZE];
  bool regrouped = false;
  redisReply *rep = NULL;
  int ret;

  *out = NULL;
  for (int tries = 0;; tries++)
    {
      if (r->c == NULL || r->c->err)
        {
          ret = rq_connect (r, err);
          if (ret < 0)
            return ret;
        }
      rep = redisCommandArgv (r->c, argc, argv, lens);
      if (rep == NULL)
        {
          if (tries >= 1)
            return bvm_error_code (err, BVM_E_NETWORK, 0, "redis `%s:%d`: %s", r->host, r->port,
                                   r->c->errstr);
          continue;
        }
      if (rep->type == REDIS_REPLY_ERROR && !regrouped && strstr (rep->str, "NOGROUP") != NULL)
        {
          freeReplyObject (rep);
          rep = NULL;
          regrouped = true;
          ret = create_group (r, err);
          if (ret < 0)
            return ret;
          tries--;
          continue;
        }
      break;
    }
  if (rep->type == REDIS_REPLY_ERROR)
    {
      ret = bvm_error_code (err, BVM_E_NETWORK, 0, "redis `%s:%d`: %s %s", r->host, r->port,
                            argv[0], queue__show (show, sizeof show, rep->str, rep->len));
      freeReplyObject (rep);
      return ret;
    }
  *out = rep;
  return 0;
}

static int
create_group (struct rq *r, bvm_error_t *err)
{
  const char *argv[] = { "XGROUP", "CREATE", r->stream, r->group, "0", "MKSTREAM" };
  redisReply *rep;

  if (r->c == NULL || r->c->err)
    {
      int ret = rq_connect (r, err);
      if (ret < 0)
        return ret;
    }
  rep = redisCommandArgv (r->c, (int) ARRAY_SIZE (argv), argv, NULL);
  if (rep == NULL)
    return bvm_error_code (err, BVM_E_NETWORK, 0, "redis `%s:%d`: %s", r->host, r->port,
                           r->c->errstr);
  if (rep->type == REDIS_REPLY_ERROR && strncmp (rep->str, "BUSYGROUP", 9) != 0)
    {
      char show[QUEUE__SHOW_SIZE];
      int ret = bvm_error_code (err, BVM_E_NETWORK, 0, "redis: create group `%s` on `%s`: %s",
                                r->group, r->stream,
                                queue__show (show, sizeof show, rep->str, rep->len));
      freeReplyObject (rep);
      return ret;
    }
  freeReplyObject (rep);
  return 0;
}

/* Reply accessors that tolerate any shape: a wrong shape reads as absent. */
static redisReply *
el (const redisReply *r, size_t i)
{
  if (r == NULL || r->type != REDIS_REPLY_ARRAY || i >= r->elements)
    return NULL;
  return r->element[i];
}

static const char *
str_el (const redisReply *r, size_t i)
{
  redisReply *e = el (r, i);
  if (e == NULL || (e->type != REDIS_REPLY_STRING && e->type != REDIS_REPLY_STATUS))
    return NULL;
  return e->str;
}

static bool
str_is (const redisReply *r, size_t i, const char *s)
{
  const char *v = str_el (r, i);
  return v != NULL && strcmp (v, s) == 0;
}

static long long
int_el (const redisReply *r, size_t i)
{
  redisReply *e = el (r, i);
  uint64_t v;
  if (e == NULL)
    return -1;
  if (e->type == REDIS_REPLY_INTEGER)
    return e->integer;
  if (e->type == REDIS_REPLY_STRING && parse_u64 (e->str, &v) == 0 && v <= INT64_MAX)
    return (long long) v;
  return -1;
}

/* --- scripts -------------------------------------------------------------- */

/* KEYS: stream, job hash, dead stream, results stream.
 * ARGV: group, owner, entry id, attempt, now (ms), lease (ms), park name,
 *       job id ("" when the message has no valid one), then per script. */
#define LUA_PRELUDE                                                                               \
  "local stream, hkey, dead, results = KEYS[1], KEYS[2], KEYS[3], KEYS[4]\n"                      \
  "local group, me, id, attempt = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])\n"                 \
  "local now, lease, park, job = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7], ARGV[8]\n"        \
  "local function pending()\n"                                                                    \
  "  local p = redis.call('XPENDING', stream, group, id, id, 1)\n"                                \
  "  if #p == 0 then return '', 0, 0 end\n"                                                       \
  "  return p[1][2], p[1][4], p[1][3]\n"                                                          \
  "end\n"                                                                                         \
  "local function owns()\n"                                                                       \
  "  local o, n = pending()\n"                                                                    \
  "  return o == me and n == attempt, o, n\n"                                                     \
  "end\n" /* the hash describes this entry, or there is none yet for a valid id */                \
  "local function hash_is_ours()\n"                                                               \
  "  if job == '' then return false end\n"                                                        \
  "  local m = redis.call('HGET', hkey, 'msg')\n"                                                 \
  "  return m == false or m == id\n"                                                              \
  "end\n" /* terminal: the record, the result, the dead letter; then the ack */                   \
  "local function finish(state, reason, rec, body)\n"                                             \
  "  local ours = hash_is_ours()\n"                                                               \
  "  if ours then\n"                                                                              \
  "    redis.call('HSET', hkey, 'state', state, 'msg', id, 'attempt', attempt, 'owner', me,\n"    \
  "                'finished_at', now, 'record', rec, 'reason', reason)\n"                        \
  "    redis.call('HDEL', hkey, 'lease_until')\n"                                                 \
  "    redis.call('XADD', results, 'MAXLEN', '~', " RQ_KEEP ", '*', 'job', job, 'msg', id,\n"     \
  "                'state', state, 'attempt', attempt, 'at', now, 'record', rec,\n"               \
  "                'reason', reason)\n"                                                           \
  "  end\n"                                                                                       \
  "  if state == 'dead' then\n"                                                                   \
  "    redis.call('XADD', dead, 'MAXLEN', '~', " RQ_KEEP ", '*', 'job', job, 'msg', id,\n"        \
  "                'reason', reason, 'attempt', attempt, 'owner', me, 'at', now,\n"               \
  "                'body', body, 'record', rec)\n"                                                \
  "  end\n"                                                                                       \
  "  redis.call('XACK', stream, group, id)\n"                                                     \
  "  redis.call('XDEL', stream, id)\n"                                                            \
  "end\n"

/* ARGV[9]: own-pending cursor ("" once recovered), ARGV[10]: entry cap.
 * Returns {source, id, delivery count, "ok", field, value, ...} or
 * {source, id, count, "toobig", size, job} or {"none"}; the body never
 * leaves redis when it is over the cap. */
static const char lua_next[] = LUA_PRELUDE
    "local cap = tonumber(ARGV[10])\n"
    "local function pack(src, e)\n"
    "  local eid, f = e[1], e[2]\n"
    "  if not f then\n" /* pending, but the entry was deleted */
    "    redis.call('XACK', stream, group, eid)\n"
    "    return nil\n"
    "  end\n"
    "  local p = redis.call('XPENDING', stream, group, eid, eid, 1)\n"
    "  local n = 0\n"
    "  if #p > 0 then n = p[1][4] end\n"
    "  local size, jf = 0, ''\n"
    "  for i = 1, #f do size = size + #f[i] end\n"
    "  for i = 1, #f - 1, 2 do if f[i] == 'job' and #f[i + 1] <= 128 then jf = f[i + 1] end end\n"
    "  if size > cap then return {src, eid, n, 'toobig', tostring(size), jf} end\n"
    "  local r = {src, eid, n, 'ok'}\n"
    "  for i = 1, #f do r[#r + 1] = f[i] end\n"
    "  return r\n"
    "end\n"
    "local cursor = ARGV[9]\n"
    "while cursor ~= '' do\n"
    "  local r = redis.call('XREADGROUP', 'GROUP', group, me, 'COUNT', 1, 'STREAMS', stream,\n"
    "                       cursor)\n"
    "  if not r or #r[1][2] == 0 then break end\n"
    "  local got = pack('own', r[1][2][1])\n"
    "  if got then return got end\n"
    "  cursor = r[1][2][1][1]\n"
    "end\n"
    "local start = '0-0'\n"
    "for i = 1, 1000 do\n"
    "  local r = redis.call('XAUTOCLAIM', stream, group, me, lease, start, 'COUNT', 1)\n"
    "  for _, e in ipairs(r[2]) do\n"
    "    if e then\n"
    "      local got = pack('claimed', e)\n"
    "      if got then return got end\n"
    "    end\n"
    "  end\n"
    "  start = r[1]\n"
    "  if start == '0-0' then break end\n"
    "end\n"
    "local r = redis.call('XREADGROUP', 'GROUP', group, me, 'COUNT', 1, 'STREAMS', stream, '>')\n"
    "if r and #r[1][2] > 0 then\n"
    "  local got = pack('new', r[1][2][1])\n"
    "  if got then return got end\n"
    "end\n"
    "return {'none'}\n";

/* After the body was validated. ARGV[9]: max attempts, ARGV[10]: body.
 * {"ok", drained} | {"lost"} | {"buried", reason} | {"finished", state} */
static const char lua_begin[] = LUA_PRELUDE
    "local ok = owns()\n"
    "if not ok then return {'lost'} end\n"
    "local h = redis.call('HMGET', hkey, 'state', 'msg', 'cancel', 'owner', 'drained')\n"
    "local st, msg, cancel, prev = h[1], h[2], h[3], h[4]\n"
    "local drained = 0\n"
    "if msg == id then drained = tonumber(h[5]) or 0 end\n"
    "if msg and msg ~= id and (st == 'queued' or st == 'running' or st == 'done') then\n"
    "  local why = 'duplicate: job `' .. job .. '` is already ' .. st .. ' as entry ' .. msg\n"
    "  finish('dead', why, '', ARGV[10])\n"
    "  return {'buried', why}\n"
    "end\n"
    "if msg == id and (st == 'done' or st == 'dead') then\n"
    /* the record was written by an earlier attempt: acknowledge only */
    "  redis.call('XACK', stream, group, id)\n"
    "  redis.call('XDEL', stream, id)\n"
    "  return {'finished', st}\n"
    "end\n"
    "if msg == id and cancel == '1' then\n"
    "  finish('dead', 'canceled', '', ARGV[10])\n"
    "  return {'buried', 'canceled'}\n"
    "end\n"
    "if attempt > tonumber(ARGV[9]) + drained then\n"
    "  local why = 'gave up after ' .. (attempt - 1) .. ' attempts: the lease of attempt ' ..\n"
    "              (attempt - 1) .. ' (`' .. (prev or '?') .. '`) expired'\n"
    "  finish('dead', why, '', ARGV[10])\n"
    "  return {'buried', why}\n"
    "end\n"
    "if not msg or msg ~= id then\n" /* an entry a producer added with plain XADD */
    "  redis.call('DEL', hkey)\n"
    "  redis.call('HSET', hkey, 'request', ARGV[10], 'enqueued_at', now)\n"
    "end\n"
    "redis.call('HSET', hkey, 'state', 'running', 'msg', id, 'attempt', attempt, 'owner', me,\n"
    "           'started_at', now, 'lease_until', now + lease)\n"
    "return {'ok', drained}\n";

/* {"ok", cancel} | {"fenced", owner, count} */
static const char lua_heartbeat[] = LUA_PRELUDE
    "local ok, o, n = owns()\n"
    "if not ok then return {'fenced', o, n} end\n"
    "redis.call('XCLAIM', stream, group, me, 0, id, 'JUSTID')\n"
    "if hash_is_ours() then redis.call('HSET', hkey, 'lease_until', now + lease) end\n"
    "return {'ok', redis.call('HGET', hkey, 'cancel') or ''}\n";

/* ARGV[9]: record. A repeat after a lost reply finds its own record. */
static const char lua_complete[] = LUA_PRELUDE
    "local ok, o, n = owns()\n"
    "if not ok then\n"
    "  local h = redis.call('HMGET', hkey, 'state', 'msg', 'attempt', 'owner')\n"
    "  if h[1] == 'done' and h[2] == id and tonumber(h[3]) == attempt and h[4] == me then\n"
    "    return {'ok'}\n"
    "  end\n"
    "  return {'fenced', o, n}\n"
    "end\n"
    "finish('done', '', ARGV[9], '')\n"
    "return {'ok'}\n";

/* ARGV[9]: reason, ARGV[10]: record, ARGV[11]: body */
static const char lua_dead[] = LUA_PRELUDE
    "local ok, o, n = owns()\n"
    "if not ok then\n"
    "  local h = redis.call('HMGET', hkey, 'state', 'msg', 'attempt', 'owner')\n"
    "  if h[1] == 'dead' and h[2] == id and tonumber(h[3]) == attempt and h[4] == me then\n"
    "    return {'ok'}\n"
    "  end\n"
    "  return {'fenced', o, n}\n"
    "end\n"
    "finish('dead', ARGV[9], ARGV[10], ARGV[11])\n"
    "return {'ok'}\n";

/* ARGV[9]: reason, ARGV[10]: "1" when the runner is draining (the attempt
 * does not count). Parks the entry: the next XAUTOCLAIM takes it at once. */
static const char lua_release[] = LUA_PRELUDE
    "local ok, o, n = owns()\n"
    "if not ok then\n"
    "  if o == park and n == attempt then return {'ok'} end\n"
    "  return {'fenced', o, n}\n"
    "end\n"
    "redis.call('XCLAIM', stream, group, park, 0, id, 'TIME', 0, 'JUSTID')\n"
    "if hash_is_ours() then\n"
    "  redis.call('HSET', hkey, 'state', 'queued', 'last_reason', ARGV[9], 'released_at', now)\n"
    "  if ARGV[10] == '1' then redis.call('HINCRBY', hkey, 'drained', 1) end\n"
    "  redis.call('HDEL', hkey, 'lease_until')\n"
    "end\n"
    "return {'ok'}\n";

/* {"new", id} | {state, id}: the job is already queued, running or done */
static const char lua_enqueue[] = LUA_PRELUDE
    "local h = redis.call('HMGET', hkey, 'state', 'msg')\n"
    "if h[1] == 'queued' or h[1] == 'running' or h[1] == 'done' then\n"
    "  return {h[1], h[2] or ''}\n"
    "end\n"
    "local nid = redis.call('XADD', stream, '*', 'job', job, 'body', ARGV[9])\n"
    "redis.call('DEL', hkey)\n"
    "redis.call('HSET', hkey, 'state', 'queued', 'msg', nid, 'attempt', 0, 'request', ARGV[9],\n"
    "           'enqueued_at', now)\n"
    "return {'new', nid}\n";

/* {"canceled"} | {"running"} | {"finished", state} | {"unknown"} */
static const char lua_cancel[] = LUA_PRELUDE
    "local h = redis.call('HMGET', hkey, 'state', 'msg', 'request')\n"
    "local st, msg = h[1], h[2]\n"
    "if not st then return {'unknown'} end\n"
    "if st == 'done' or st == 'dead' then return {'finished', st} end\n"
    "if st == 'queued' and msg then\n"
    "  local p = redis.call('XPENDING', stream, group, msg, msg, 1)\n"
    "  if #p == 0 or p[1][2] == park then\n"
    /* in no runner's hands: dead-letter it now */
    "    id, me = msg, ''\n"
    "    attempt = 0\n"
    "    if #p > 0 then attempt = p[1][4] end\n"
    "    finish('dead', 'canceled before it ran', '', h[3] or '')\n"
    "    return {'canceled'}\n"
    "  end\n"
    "end\n"
    "redis.call('HSET', hkey, 'cancel', '1')\n"
    "return {'running'}\n";

/* ARGV[9]: limit. {queued: {{id, job, count}...}, running: {{id, job, owner,
 * idle, count, cancel, started_at}...}} */
static const char lua_list[] = LUA_PRELUDE
    "local limit = tonumber(ARGV[9])\n"
    "local function jobof(f)\n"
    "  if not f then return '' end\n"
    "  for i = 1, #f - 1, 2 do if f[i] == 'job' then return f[i + 1] end end\n"
    "  return ''\n"
    "end\n"
    "local function valid(j)\n" /* a job key, APP+ID (job_key_problem) */
    "  return #j <= 192 and string.match(j, '^[a-z0-9][a-z0-9-]*[+][A-Za-z0-9][A-Za-z0-9._-]*$') ~= nil\n"
    "end\n"
    "local pend = {}\n"
    "local running = {}\n"
    "for _, e in ipairs(redis.call('XPENDING', stream, group, '-', '+', 10000)) do\n"
    "  pend[e[1]] = e\n"
    "  if e[2] ~= park and #running < limit then\n"
    "    local r = redis.call('XRANGE', stream, e[1], e[1])\n"
    "    local j = ''\n"
    "    if #r > 0 then j = jobof(r[1][2]) end\n"
    "    local c, st = '', ''\n"
    "    if valid(j) then\n"
    "      c = redis.call('HGET', stream .. ':job:' .. j, 'cancel') or ''\n"
    "      st = redis.call('HGET', stream .. ':job:' .. j, 'started_at') or ''\n"
    "    end\n"
    "    running[#running + 1] = {e[1], j, e[2], e[3], e[4], c, st}\n"
    "  end\n"
    "end\n"
    "local queued = {}\n"
    "local start = '-'\n"
    "for page = 1, 100 do\n"
    "  if #queued >= limit then break end\n"
    "  local r = redis.call('XRANGE', stream, start, '+', 'COUNT', 100)\n"
    "  if #r == 0 then break end\n"
    "  for _, e in ipairs(r) do\n"
    "    local pe = pend[e[1]]\n"
    "    if (pe == nil or pe[2] == park) and #queued < limit then\n"
    "      local n = 0\n"
    "      if pe then n = pe[4] end\n"
    "      queued[#queued + 1] = {e[1], jobof(e[2]), n}\n"
    "    end\n"
    "  end\n"
    "  start = '(' .. r[#r][1]\n"
    "end\n"
    "return {queued, running}\n";

/* {queued, running} */
static const char lua_depth[] = LUA_PRELUDE
    "local len = redis.call('XLEN', stream)\n"
    "local s = redis.call('XPENDING', stream, group)\n"
    "local pending, parked = s[1], 0\n"
    "if s[4] then\n"
    "  for _, c in ipairs(s[4]) do if c[1] == park then parked = tonumber(c[2]) end end\n"
    "end\n"
    "local queued = len - pending + parked\n"
    "if queued < 0 then queued = 0 end\n"
    "return {queued, pending - parked}\n";

#define RQ_MAX_ARGS 20

/* Arguments for one script call, in the layout LUA_PRELUDE expects. */
struct call
{
  const char *v[RQ_MAX_ARGS];
  size_t l[RQ_MAX_ARGS];
  int n;
  char nums[4][32];
  char hkey[RQ_STREAM_MAX + JOB_KEY_MAX + 8];
};

static void
call_add (struct call *c, const char *s, size_t len)
{
  if (c->n < RQ_MAX_ARGS)
    {
      c->v[c->n] = s;
      c->l[c->n] = len;
      c->n++;
    }
}

static void
call_adds (struct call *c, const char *s)
{
  call_add (c, s, strlen (s));
}

/* EVAL script 4 keys... group owner id attempt now lease park job */
static void
call_init (struct call *c, struct rq *r, const char *script, const char *job, const char *owner,
           const char *id, unsigned attempt)
{
  c->n = 0;
  if (job == NULL || job_key_problem (job) != NULL)
    job = "";
  snprintf (c->hkey, sizeof c->hkey, "%s:job:%s", r->stream, job);
  snprintf (c->nums[0], sizeof c->nums[0], "%u", attempt);
  snprintf (c->nums[1], sizeof c->nums[1], "%lld", (long long) queue__wall_ms ());
  snprintf (c->nums[2], sizeof c->nums[2], "%lld", (long long) r->q.lease_ms);
  call_adds (c, "EVAL");
  call_adds (c, script);
  call_adds (c, "4");
  call_adds (c, r->stream);
  call_adds (c, c->hkey);
  call_adds (c, r->dead);
  call_adds (c, r->results);
  call_adds (c, r->group);
  call_adds (c, owner ? owner : "");
  call_adds (c, id ? id : "");
  call_adds (c, c->nums[0]);
  call_adds (c, c->nums[1]);
  call_adds (c, c->nums[2]);
  call_adds (c, RQ_PARK);
  call_adds (c, job);
}

static int
call_run (redisReply **out, struct rq *r, struct call *c, bvm_error_t *err)
{
  int ret = rq_cmd (out, r, c->n, c->v, c->l, err);
  if (ret < 0)
    return ret;
  if ((*out)->type != REDIS_REPLY_ARRAY || str_el (*out, 0) == NULL)
    {
      freeReplyObject (*out);
      *out = NULL;
      return bvm_error_code (err, BVM_E_INTERNAL, 0, "redis: unexpected reply to a script");
    }
  return 0;
}

static int
fenced (const redisReply *rep, const struct queue_msg *m, bvm_error_t *err)
{
  const char *o = str_el (rep, 1);
  long long n = int_el (rep, 2);
  char show[QUEUE__SHOW_SIZE];

  if (o == NULL || *o == '\0')
    return bvm_error_code (err, BVM_E_FENCED, 0,
                           "fenced off: entry %s is no longer pending (finished or canceled)",
                           m->msg_id);
  if (strcmp (o, RQ_PARK) == 0)
    return bvm_error_code (err, BVM_E_FENCED, 0, "fenced off: the job was released");
  return bvm_error_code (err, BVM_E_FENCED, 0, "fenced off: attempt %lld (`%s`) holds the job now",
                         n, queue__show (show, sizeof show, o, strlen (o)));
}

/* Run a call of the holder of m whose script answers "ok", or why it is
 * fenced off. */
static int
call_held (struct rq *r, struct call *c, const struct queue_msg *m, bvm_error_t *err)
{
  cleanup_reply redisReply *rep = NULL;
  int ret = call_run (&rep, r, c, err);
  if (ret < 0)
    return ret;
  if (!str_is (rep, 0, "ok"))
    return fenced (rep, m, err);
  return 0;
}

/* --- open / close --------------------------------------------------------- */

static void
rq_close (struct queue *q)
{
  struct rq *r = R (q);
  if (r == NULL)
    return;
  if (r->c != NULL)
    redisFree (r->c);
  free (r->host);
  free (r->stream);
  free (r->group);
  free (r->dead);
  free (r->results);
  queue__dispose (&r->q);
  free (r);
}

static int
rq_open (struct queue **out, const char *url, const struct queue_opts *o, bvm_error_t *err)
{
  struct rq *r = calloc (1, sizeof *r);
  struct queue *guard;
  int ret;

  if (r == NULL)
    return bvm_error (err, ENOMEM, "redis queue");
  guard = &r->q;
  r->q.drv = &queue__redis_driver;
  ret = queue__init (&r->q, &queue__redis_driver, o, err);
  if (ret == 0)
    ret = parse_url (r, url, err);
  if (ret == 0)
    ret = rq_connect (r, err);
  if (ret == 0)
    ret = create_group (r, err);
  if (ret < 0)
    {
      rq_close (guard);
      return ret;
    }
  *out = steal_pointer (&guard);
  return 0;
}

/* --- lease ---------------------------------------------------------------- */

/* Dead-letter a message we hold that cannot run. */
static int
bury (struct rq *r, const char *job, const char *id, unsigned attempt, const char *reason,
      const char *body, size_t body_len, bvm_error_t *err)
{
  cleanup_reply redisReply *rep = NULL;
  cleanup_free char *why = queue__reason (reason);
  struct call c;
  int ret;

  if (why == NULL)
    return bvm_error (err, ENOMEM, "dead letter");
  call_init (&c, r, lua_dead, job, r->q.consumer, id, attempt);
  call_adds (&c, why);
  call_adds (&c, "");
  call_add (&c, body ? body : "", body ? body_len : 0);
  ret = call_run (&rep, r, &c, err);
  if (ret < 0)
    return ret;
  /* fenced: another runner took it over meanwhile and will judge it itself */
  return 0;
}

/* Look at one message. 1: *out is a leased job; 0: nothing there; 2: a
 * message was handled (dead-lettered, or lost to another runner): look
 * again. */
static int
next_one (struct queue_msg **out, struct rq *r, bvm_error_t *err)
{
  cleanup_reply redisReply *rep = NULL, *brep = NULL;
  cleanup_error bvm_error_t perr = NULL;
  cleanup_free char *why = NULL;
  struct queue_msg *m = NULL;
  const char *src, *id, *job = NULL, *body = NULL;
  size_t body_len = 0, nfields;
  char show[QUEUE__SHOW_SIZE];
  long long count;
  struct call c;
  char cap[32];
  int ret;

  call_init (&c, r, lua_next, NULL, r->q.consumer, NULL, 0);
  call_adds (&c, r->recovered ? "" : (r->own_cursor[0] ? r->own_cursor : "0"));
  snprintf (cap, sizeof cap, "%d", RQ_ENTRY_MAX);
  call_adds (&c, cap);
  ret = call_run (&rep, r, &c, err);
  if (ret < 0)
    return ret;
  src = str_el (rep, 0);
  if (strcmp (src, "own") != 0)
    r->recovered = true;
  if (strcmp (src, "none") == 0)
    return 0;
  id = str_el (rep, 1);
  count = int_el (rep, 2);
  if (id == NULL || strlen (id) >= sizeof r->own_cursor || count < 1 || count > 1000000)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "redis: unexpected reply to a lease");
  if (strcmp (src, "own") == 0)
    snprintf (r->own_cursor, sizeof r->own_cursor, "%s", id);

  if (str_is (rep, 3, "toobig"))
    {
      job = str_el (rep, 5);
      if (asprintf (&why, "the message is larger than %d bytes (%s)", JOB_REQUEST_MAX_BYTES,
                    str_el (rep, 4) ? str_el (rep, 4) : "?")
          < 0)
        return bvm_error (err, ENOMEM, "dead letter");
      ret = bury (r, job, id, (unsigned) count, why, NULL, 0, err);
      return ret < 0 ? ret : 2;
    }
  /* exactly the fields `job` and `body`, once each */
  nfields = rep->elements - 4;
  for (size_t i = 4; i + 1 < rep->elements; i += 2)
    {
      redisReply *k = el (rep, i), *v = el (rep, i + 1);
      if (k == NULL || v == NULL || k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
        continue;
      if (strcmp (k->str, "job") == 0 && job == NULL)
        job = v->str;
      else if (strcmp (k->str, "body") == 0 && body == NULL)
        {
          body = v->str;
          body_len = v->len;
        }
    }
  if (nfields != 4 || job == NULL || body == NULL)
    why = strdup ("the entry must have exactly the fields `job` and `body`");
  else if (job_key_problem (job) != NULL)
    {
      if (asprintf (&why, "the entry's job `%s` is not a valid job key (`<app>+<job id>`)",
                    queue__show (show, sizeof show, job, strlen (job)))
          < 0)
        why = NULL;
    }
  else
    {
      m = calloc (1, sizeof *m);
      if (m == NULL)
        return bvm_error (err, ENOMEM, "message");
      if (queue__parse_body (m, body, body_len, job, &perr) < 0)
        {
          queue_msg_free (m);
          m = NULL;
          if (bvm_error_get_code (&perr) != BVM_E_INVALID
              && bvm_error_get_code (&perr) != BVM_E_LIMIT)
            return bvm_error (err, ENOMEM, "message %s", id);
          why = strdup (bvm_error_msg (&perr));
        }
    }
  if (m == NULL)
    {
      if (why == NULL)
        return bvm_error (err, ENOMEM, "dead letter");
      ret = bury (r, job, id, (unsigned) count, why, body, body_len, err);
      return ret < 0 ? ret : 2;
    }

  call_init (&c, r, lua_begin, m->key, r->q.consumer, id, (unsigned) count);
  snprintf (cap, sizeof cap, "%u", r->q.max_attempts);
  call_adds (&c, cap);
  call_add (&c, m->body, m->len);
  ret = call_run (&brep, r, &c, err);
  if (ret < 0 || !str_is (brep, 0, "ok"))
    {
      queue_msg_free (m);
      return ret < 0 ? ret : 2;
    }
  m->msg_id = strdup (id);
  m->owner = strdup (r->q.consumer);
  if (m->msg_id == NULL || m->owner == NULL)
    {
      queue_msg_free (m);
      return bvm_error (err, ENOMEM, "message");
    }
  m->attempt = (unsigned) count;
  m->last_attempt = r->q.max_attempts + (int_el (brep, 1) > 0 ? (unsigned) int_el (brep, 1) : 0);
  m->lease_until_ms = queue__wall_ms () + r->q.lease_ms;
  m->redelivered = count > 1;
  *out = m;
  return 1;
}

static int
rq_lease (struct queue_msg **out, struct queue *q, bvm_error_t *err)
{
  struct rq *r = R (q);

  *out = NULL;
  for (int i = 0; i < RQ_LEASE_LOOPS; i++)
    {
      int ret = next_one (out, r, err);
      if (ret <= 1)
        return ret < 0 ? ret : 0;
    }
  return 0;
}

/* --- the holder's operations ---------------------------------------------- */

static int
rq_heartbeat (struct queue *q, struct queue_msg *m, bvm_error_t *err)
{
  struct rq *r = R (q);
  struct call c;
  int ret;

  call_init (&c, r, lua_heartbeat, m->key, m->owner, m->msg_id, m->attempt);
  ret = call_held (r, &c, m, err);
  if (ret < 0)
    return ret;
  m->lease_until_ms = queue__wall_ms () + q->lease_ms;
  return 0;
}

static int
rq_check_fence (struct queue *q, const struct queue_msg *m, bvm_error_t *err)
{
  struct rq *r = R (q);
  cleanup_reply redisReply *rep = NULL;
  const char *argv[] = { "XPENDING", r->stream, r->group, m->msg_id, m->msg_id, "1" };
  redisReply *e;
  const char *owner;
  long long idle, n;
  char show[QUEUE__SHOW_SIZE];
  int ret;

  ret = rq_cmd (&rep, r, (int) ARRAY_SIZE (argv), argv, NULL, err);
  if (ret < 0)
    return ret;
  e = el (rep, 0);
  owner = str_el (e, 1);
  idle = int_el (e, 2);
  n = int_el (e, 3);
  if (e == NULL || owner == NULL)
    return bvm_error_code (err, BVM_E_FENCED, 0,
                           "fenced off: entry %s is no longer pending (finished or canceled)",
                           m->msg_id);
  if (strcmp (owner, m->owner) != 0 || n != (long long) m->attempt)
    return bvm_error_code (err, BVM_E_FENCED, 0,
                           "fenced off: attempt %lld (`%s`) holds the job now", n,
                           queue__show (show, sizeof show, owner, strlen (owner)));
  if (idle < 0 || idle >= q->lease_ms)
    return bvm_error_code (err, BVM_E_FENCED, 0,
                           "fenced off: no heartbeat for %lld ms, the lease may be taken over",
                           idle);
  return 0;
}

static int
rq_complete (struct queue *q, struct queue_msg *m, const char *record, bvm_error_t *err)
{
  struct rq *r = R (q);
  struct call c;

  call_init (&c, r, lua_complete, m->key, m->owner, m->msg_id, m->attempt);
  call_adds (&c, record);
  return call_held (r, &c, m, err);
}

static int
rq_release (struct queue *q, struct queue_msg *m, const char *reason, bool drain, bvm_error_t *err)
{
  struct rq *r = R (q);
  struct call c;

  call_init (&c, r, lua_release, m->key, m->owner, m->msg_id, m->attempt);
  call_adds (&c, reason);
  call_adds (&c, drain ? "1" : "0");
  return call_held (r, &c, m, err);
}

static int
rq_dead_letter (struct queue *q, struct queue_msg *m, const char *reason, const char *record,
                bvm_error_t *err)
{
  struct rq *r = R (q);
  struct call c;

  call_init (&c, r, lua_dead, m->key, m->owner, m->msg_id, m->attempt);
  call_adds (&c, reason);
  call_adds (&c, record ? record : "");
  call_add (&c, m->body ? m->body : "", m->body ? m->len : 0);
  return call_held (r, &c, m, err);
}

/* --- operator's operations ------------------------------------------------ */

static int
rq_cancel (bool *was_running, struct queue *q, const char *job_id, bvm_error_t *err)
{
  struct rq *r = R (q);
  cleanup_reply redisReply *rep = NULL;
  struct call c;
  int ret;

  call_init (&c, r, lua_cancel, job_id, "", "", 0);
  ret = call_run (&rep, r, &c, err);
  if (ret < 0)
    return ret;
  if (str_is (rep, 0, "canceled"))
    return 0;
  if (str_is (rep, 0, "running"))
    {
      *was_running = true;
      return 0;
    }
  if (str_is (rep, 0, "finished"))
    return bvm_error_code (err, BVM_E_INVALID, 0, "the job has already finished (%s)",
                           str_is (rep, 1, "done") ? "done" : "dead");
  return bvm_error_code (err, BVM_E_INVALID, 0, "no such job is queued or running");
}

static int
rq_cancel_requested (struct queue *q, const struct queue_msg *m, bvm_error_t *err)
{
  struct rq *r = R (q);
  cleanup_reply redisReply *rep = NULL;
  char hkey[RQ_STREAM_MAX + JOB_KEY_MAX + 8];
  const char *argv[] = { "HMGET", hkey, "cancel", "msg" };
  int ret;

  if (m == NULL || m->key == NULL || job_key_problem (m->key) != NULL)
    return 0;
  snprintf (hkey, sizeof hkey, "%s:job:%s", r->stream, m->key);
  ret = rq_cmd (&rep, r, (int) ARRAY_SIZE (argv), argv, NULL, err);
  if (ret < 0)
    return ret;
  return str_is (rep, 0, "1") && str_is (rep, 1, m->msg_id) ? 1 : 0;
}

static int
rq_enqueue (char **msg_id, enum queue_state *existing, struct queue *q, const char *key,
            const char *body, size_t len, bvm_error_t *err)
{
  struct rq *r = R (q);
  cleanup_reply redisReply *rep = NULL;
  struct call c;
  int ret;

  call_init (&c, r, lua_enqueue, key, "", "", 0);
  call_add (&c, body, len);
  ret = call_run (&rep, r, &c, err);
  if (ret < 0)
    return ret;
  *existing = str_is (rep, 0, "new")       ? QUEUE_STATE_NONE
              : str_is (rep, 0, "queued")  ? QUEUE_STATE_QUEUED
              : str_is (rep, 0, "running") ? QUEUE_STATE_RUNNING
                                           : QUEUE_STATE_DONE;
  *msg_id = strdup (str_el (rep, 1) ? str_el (rep, 1) : "");
  if (*msg_id == NULL)
    return bvm_error (err, ENOMEM, "enqueue");
  return 0;
}

/* A hash field or stream value as JSON: a number for the `*_at`, attempt
 * and lease fields, parsed JSON for request/record, else a string. */
static json_t *
field_json (const char *k, const char *v, size_t len)
{
  static const char *const nums[] = { "attempt",     "enqueued_at", "started_at", "finished_at",
                                      "released_at", "lease_until", "at" };
  cleanup_error bvm_error_t err = NULL;
  json_t *j = NULL;
  uint64_t n;

  for (size_t i = 0; i < ARRAY_SIZE (nums); i++)
    if (strcmp (k, nums[i]) == 0 && parse_u64 (v, &n) == 0 && n <= INT64_MAX)
      return json_integer ((json_int_t) n);
  if (strcmp (k, "request") == 0 || strcmp (k, "record") == 0 || strcmp (k, "body") == 0)
    {
      if (len == 0)
        return json_null ();
      if (jsonx_parse (&j, v, len, QUEUE_RECORD_MAX, k, &err) == 0)
        return j;
    }
  if (strcmp (k, "cancel") == 0)
    return json_boolean (strcmp (v, "1") == 0);
  j = json_stringn (v, len);
  if (j == NULL)
    {
      char show[QUEUE__SHOW_SIZE];
      j = json_string (queue__show (show, sizeof show, v, len));
    }
  return j;
}

/* Field/value pairs of a reply (HGETALL, a stream entry) as an object. */
static json_t *
pairs_json (const redisReply *pairs)
{
  json_t *o = json_object ();
  if (o == NULL || pairs == NULL || pairs->type != REDIS_REPLY_ARRAY)
    return o;
  for (size_t i = 0; i + 1 < pairs->elements; i += 2)
    {
      redisReply *k = pairs->element[i], *v = pairs->element[i + 1];
      json_t *j;
      if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING
          || strlen (k->str) != k->len)
        continue;
      j = field_json (k->str, v->str, v->len);
      if (j != NULL && json_object_set_new (o, k->str, j) < 0)
        json_decref (j);
    }
  return o;
}

static int
rq_get (json_t **out, struct queue *q, const char *job_id, bvm_error_t *err)
{
  struct rq *r = R (q);
  cleanup_reply redisReply *rep = NULL;
  cleanup_json json_t *doc = NULL;
  char hkey[RQ_STREAM_MAX + JOB_KEY_MAX + 8];
  const char *argv[] = { "HGETALL", hkey };
  int ret;

  snprintf (hkey, sizeof hkey, "%s:job:%s", r->stream, job_id);
  ret = rq_cmd (&rep, r, (int) ARRAY_SIZE (argv), argv, NULL, err);
  if (ret < 0)
    return ret;
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements == 0)
    return 0;
  doc = pairs_json (rep);
  if (doc == NULL || json_object_set_new (doc, "job", json_string (job_id)) < 0)
    return bvm_error (err, ENOMEM, "job `%s`", job_id);
  *out = steal_pointer (&doc);
  return 0;
}

static int
list_stream (json_t *arr, struct rq *r, const char *key, const char *only_state, size_t limit,
             bvm_error_t *err)
{
  cleanup_reply redisReply *rep = NULL;
  char count[32];
  const char *argv[] = { "XREVRANGE", key, "+", "-", "COUNT", count };
  int ret;

  /* the results stream holds dead jobs too: read more to fill `limit` */
  snprintf (count, sizeof count, "%zu", only_state ? limit * 4 : limit);
  ret = rq_cmd (&rep, r, (int) ARRAY_SIZE (argv), argv, NULL, err);
  if (ret < 0)
    return ret;
  for (size_t i = 0; i < rep->elements && json_array_size (arr) < limit; i++)
    {
      json_t *o = pairs_json (el (el (rep, i), 1));
      json_t *st = json_object_get (o, "state");
      if (o == NULL)
        return bvm_error (err, ENOMEM, "listing");
      if (only_state != NULL
          && !(json_is_string (st) && strcmp (json_string_value (st), only_state) == 0))
        {
          json_decref (o);
          continue;
        }
      json_object_del (o, "body");
      if (only_state != NULL && json_object_get (o, "at") != NULL)
        {
          /* the same key as the spool's done records */
          json_object_set (o, "finished_at", json_object_get (o, "at"));
          json_object_del (o, "at");
        }
      if (json_array_append_new (arr, o) < 0)
        return bvm_error (err, ENOMEM, "listing");
    }
  return 0;
}

static int
rq_list (json_t **out, struct queue *q, size_t limit, bvm_error_t *err)
{
  struct rq *r = R (q);
  cleanup_reply redisReply *rep = NULL;
  cleanup_json json_t *doc = json_pack ("{s:[],s:[],s:[],s:[]}", "queued", "running", "done",
                                        "dead");
  redisReply *part;
  struct call c;
  char lim[32];
  int64_t now = queue__wall_ms ();
  int ret;

  if (doc == NULL)
    return bvm_error (err, ENOMEM, "listing");
  call_init (&c, r, lua_list, NULL, "", "", 0);
  snprintf (lim, sizeof lim, "%zu", limit);
  call_adds (&c, lim);
  ret = rq_cmd (&rep, r, c.n, c.v, c.l, err);
  if (ret < 0)
    return ret;
  part = el (rep, 0);
  for (size_t i = 0; part != NULL && i < part->elements; i++)
    {
      redisReply *e = el (part, i);
      uint64_t at = 0;
      char ms[32];
      json_t *item;
      /* an entry id is "<ms>-<seq>": the time it was added */
      if (str_el (e, 0) != NULL)
        {
          snprintf (ms, sizeof ms, "%.*s", (int) strcspn (str_el (e, 0), "-"), str_el (e, 0));
          if (parse_u64 (ms, &at) < 0 || at > INT64_MAX)
            at = 0;
        }
      item = json_pack ("{s:s?,s:s?,s:I,s:I}", "msg", str_el (e, 0), "job", str_el (e, 1),
                        "attempts", (json_int_t) int_el (e, 2), "enqueued_at", (json_int_t) at);
      if (item == NULL || json_array_append_new (json_object_get (doc, "queued"), item) < 0)
        return bvm_error (err, ENOMEM, "listing");
    }
  part = el (rep, 1);
  for (size_t i = 0; part != NULL && i < part->elements; i++)
    {
      redisReply *e = el (part, i);
      long long started = int_el (e, 6);
      json_t *item = json_pack ("{s:s?,s:s?,s:s?,s:I,s:I,s:b}", "msg", str_el (e, 0), "job",
                                str_el (e, 1), "owner", str_el (e, 2), "lease_until",
                                (json_int_t) (now - int_el (e, 3) + q->lease_ms), "attempt",
                                (json_int_t) int_el (e, 4), "cancel", str_is (e, 5, "1"));
      if (item != NULL && started >= 0)
        json_object_set_new (item, "started_at", json_integer (started));
      if (item == NULL || json_array_append_new (json_object_get (doc, "running"), item) < 0)
        return bvm_error (err, ENOMEM, "listing");
    }
  ret = list_stream (json_object_get (doc, "done"), r, r->results, "done", limit, err);
  if (ret == 0)
    ret = list_stream (json_object_get (doc, "dead"), r, r->dead, NULL, limit, err);
  if (ret < 0)
    return ret;
  *out = steal_pointer (&doc);
  return 0;
}

static int
rq_depth (uint64_t *queued, uint64_t *running, struct queue *q, bvm_error_t *err)
{
  struct rq *r = R (q);
  cleanup_reply redisReply *rep = NULL;
  struct call c;
  int ret;

  call_init (&c, r, lua_depth, NULL, "", "", 0);
  ret = rq_cmd (&rep, r, c.n, c.v, c.l, err);
  if (ret < 0)
    return ret;
  if (int_el (rep, 0) < 0 || int_el (rep, 1) < 0)
    return bvm_error_code (err, BVM_E_INTERNAL, 0, "redis: unexpected reply to depth");
  *queued = (uint64_t) int_el (rep, 0);
  *running = (uint64_t) int_el (rep, 1);
  return 0;
}

const struct queue_driver queue__redis_driver = {
  .scheme = "redis://",
  .poll_ms = 200,
  .check_url = rq_check_url,
  .open = rq_open,
  .enqueue = rq_enqueue,
  .lease = rq_lease,
  .heartbeat = rq_heartbeat,
  .check_fence = rq_check_fence,
  .complete = rq_complete,
  .release = rq_release,
  .dead_letter = rq_dead_letter,
  .cancel = rq_cancel,
  .cancel_requested = rq_cancel_requested,
  .list = rq_list,
  .get = rq_get,
  .depth = rq_depth,
  .close = rq_close,
};
