// Behaviour of the generated dual-write wrapper against the real supabase-js client.
// The client's fetch is a recorder that answers like PostgREST; no server is needed.
// Run by tests/codemods/test_wrapper_ts.py after it compiles the generated module into WRAPPER_DIR.
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { createClient } = require('@supabase/supabase-js');

const wrapper = require(path.join(process.env.WRAPPER_DIR, 'dualWrite.js'));
const { dualWrite, stats, settings, resetFlags } = wrapper;
settings.logger = () => {};

function fakePostgrest(routes) {
  const requests = [];
  const fetch = async (input, init = {}) => {
    const url = new URL(typeof input === 'string' ? input : input.url);
    const table = url.pathname.replace('/rest/v1/', '');
    const headers = Object.fromEntries(new Headers(init.headers).entries());
    const profile = headers['content-profile'] ?? headers['accept-profile'] ?? 'public';
    const request = { method: init.method ?? 'GET', table, profile, query: url.searchParams.toString(), body: init.body ? JSON.parse(init.body) : null };
    requests.push(request);
    const route = routes(request) ?? { status: 200, body: [] };
    if (route.delay) await new Promise((resolve) => setTimeout(resolve, route.delay));
    return new Response(route.body === undefined ? '' : JSON.stringify(route.body), { status: route.status, headers: { 'content-type': 'application/json' } });
  };
  // Node 20 has no WebSocket; realtime is never used here, so any constructor will do.
  const client = createClient('http://db.local', 'anon-key', { global: { fetch }, realtime: { transport: class {} } });
  return { client, requests };
}

function flags(values) {
  return (request) => (request.table === 'flags' ? { status: 200, body: values } : undefined);
}

function routes(...handlers) {
  return (request) => {
    for (const handler of handlers) {
      const answer = handler(request);
      if (answer) return answer;
    }
    return request.method === 'GET' ? { status: 200, body: [] } : { status: 201 };
  };
}

test.beforeEach(() => {
  resetFlags();
  for (const key of Object.keys(stats)) stats[key] = 0;
});

test('a write goes to the old table first and its result is what the caller gets', async () => {
  const { client, requests } = fakePostgrest(routes(flags([]), (r) => (r.table === 'tweets' && r.method === 'POST' ? { status: 201, body: [{ id: 7, tweet_id: 't1', decision_id: 'd1', text: 'hi', url: 'u' }] } : undefined)));
  const result = await dualWrite(client).from('tweets').insert({ tweet_id: 't1', decision_id: 'd1', text: 'hi', url: 'u' }).select();
  assert.deepEqual(result.data, [{ id: 7, tweet_id: 't1', decision_id: 'd1', text: 'hi', url: 'u' }]);
  const writes = requests.filter((r) => r.method === 'POST' && r.table !== 'flags');
  assert.deepEqual(writes.map((r) => r.table), ['tweets', 'posted_content']);
  // Mapped columns (text → content, url → tweet_url), the id dropped, the source's constants added.
  assert.deepEqual(writes[1].body, [{ tweet_id: 't1', decision_id: 'd1', content: 'hi', tweet_url: 'u', source_table: 'tweets', decision_type: 'single' }]);
  // tweets is not the first source of posted_content: it must never overwrite posted_decisions' rows.
  assert.match(writes[1].query, /on_conflict=decision_id/);
  assert.equal(stats.mirrored, 1);
});

test('filters are replayed on the new table with mapped column names', async () => {
  const { client, requests } = fakePostgrest(routes(flags([])));
  await dualWrite(client).from('content_generation_metadata_comprehensive').update({ topic: 'sleep', status: 'posted' }).eq('decision_id', 'd9').or('topic.eq.x,predicted_engagement.gt.0.1');
  const [old, mirrored] = requests.filter((r) => r.method === 'PATCH');
  assert.equal(old.table, 'content_generation_metadata_comprehensive');
  assert.equal(mirrored.table, 'content_queue');
  assert.deepEqual(mirrored.body, { raw_topic: 'sleep', status: 'posted' });
  const query = new URLSearchParams(mirrored.query);
  assert.equal(query.get('decision_id'), 'eq.d9');
  assert.equal(query.get('or'), '(raw_topic.eq.x,predicted_er.gt.0.1)');
});

test('a failing new-table write never reaches the caller and is recorded for replay', async () => {
  const { client, requests } = fakePostgrest(routes(flags([]), (r) => (r.table === 'engagement_metrics' ? { status: 500, body: { message: 'relation is locked', code: '55P03' } } : undefined)));
  const result = await dualWrite(client).from('outcomes').insert({ tweet_id: 't', collected_at: '2026-11-01T00:00:00Z', decision_id: 'd', likes: 3 });
  assert.equal(result.error, null);
  assert.equal(result.status, 201);
  const recorded = requests.find((r) => r.table === 'failed_writes');
  assert.ok(recorded, 'the failure was not recorded');
  assert.equal(recorded.profile, 'dualshift');
  assert.equal(recorded.body.old_table, 'outcomes');
  assert.equal(recorded.body.new_table, 'engagement_metrics');
  assert.match(recorded.body.error, /relation is locked/);
  assert.match(recorded.body.call_site, /wrapper\.test\.cjs/);
  assert.equal(stats.failed, 1);
});

test('a slow new table costs the caller at most the timeout', async () => {
  settings.timeoutMs = 50;
  const { client, requests } = fakePostgrest(routes(flags([]), (r) => (r.table === 'content_queue' ? { status: 201, delay: 2000 } : undefined)));
  const started = Date.now();
  const result = await dualWrite(client).from('content_metadata').update({ status: 'failed' }).eq('decision_id', 'd1');
  assert.ok(Date.now() - started < 1500);
  assert.equal(result.error, null);
  assert.equal(stats.timedOut, 1);
  assert.ok(requests.some((r) => r.table === 'failed_writes'));
  settings.timeoutMs = 2000;
});

test('an old-table error is returned as is and nothing is mirrored', async () => {
  const { client, requests } = fakePostgrest(routes(flags([]), (r) => (r.table === 'posts' ? { status: 409, body: { message: 'duplicate key', code: '23505' } } : undefined)));
  const result = await dualWrite(client).from('posts').insert({ decision_id: 'd', tweet_id: 't', content: 'c' });
  assert.equal(result.error.code, '23505');
  assert.ok(!requests.some((r) => r.table === 'posted_content'));
});

test('dual_write off means the old path only', async () => {
  const { client, requests } = fakePostgrest(routes(flags([{ scope: '*', name: 'dual_write', value: false }])));
  await dualWrite(client).from('posts').delete().eq('decision_id', 'd');
  assert.deepEqual(requests.filter((r) => r.method === 'DELETE').map((r) => r.table), ['posts']);
});

test('reads switch to the new table by percentage, renamed back, with flags cached', async () => {
  const { client, requests } = fakePostgrest(routes(
    flags([{ scope: 'content_queue', name: 'read_from_new_percent', value: 100 }]),
    (r) => (r.table === 'content_queue' ? { status: 200, body: [{ decision_id: 'd', raw_topic: 'sleep' }] } : undefined),
  ));
  const result = await dualWrite(client).from('content_generation_metadata_comprehensive').select('decision_id, topic').eq('topic', 'sleep');
  assert.deepEqual(result.data, [{ decision_id: 'd', topic: 'sleep' }]);
  const read = requests.find((r) => r.table === 'content_queue');
  assert.equal(new URLSearchParams(read.query).get('select'), 'decision_id,raw_topic');
  assert.equal(new URLSearchParams(read.query).get('raw_topic'), 'eq.sleep');
  await dualWrite(client).from('content_metadata').select('decision_id');
  assert.equal(requests.filter((r) => r.table === 'flags').length, 1, 'flags were not cached');
  assert.equal(stats.readsFromNew, 2);
});

test('shadow reads compare both tables and still return the old result', async () => {
  const { client } = fakePostgrest(routes(
    flags([{ scope: '*', name: 'shadow_reads', value: true }]),
    (r) => (r.table === 'outcomes' ? { status: 200, body: [{ tweet_id: 't', likes: 1 }] } : undefined),
    (r) => (r.table === 'engagement_metrics' ? { status: 200, body: [{ tweet_id: 't', likes: 2 }] } : undefined),
  ));
  const result = await dualWrite(client).from('outcomes').select('tweet_id, likes');
  assert.deepEqual(result.data, [{ tweet_id: 't', likes: 1 }]);
  assert.equal(stats.shadowMismatches, 1);
});

test('tables not in the plan pass straight through', async () => {
  const { client, requests } = fakePostgrest(routes());
  await dualWrite(client).from('bot_config').upsert({ key: 'k', value: {} });
  assert.deepEqual(requests.map((r) => r.table), ['bot_config']);
});

test('an insert whose key comes from a database default is recorded, not guessed', async () => {
  const { client, requests } = fakePostgrest(routes(flags([])));
  await dualWrite(client).from('content_metadata').insert({ content: 'no key given' });
  const recorded = requests.find((r) => r.table === 'failed_writes');
  assert.match(recorded.body.error, /lack key decision_id/);
  assert.ok(!requests.some((r) => r.table === 'content_queue'));
});

test('a shadow-read mismatch is recorded by key and column name, never by value', async () => {
  const { client, requests } = fakePostgrest(routes(
    flags([{ scope: '*', name: 'shadow_reads', value: true }]),
    (r) => (r.table === 'content_metadata' ? { status: 200, body: [{ decision_id: 'd1', status: 'queued' }, { decision_id: 'd2', status: 'posted' }] } : undefined),
    (r) => (r.table === 'content_queue' ? { status: 200, body: [{ decision_id: 'd1', status: 'failed' }, { decision_id: 'd3', status: 'posted' }] } : undefined),
  ));
  const result = await dualWrite(client).from('content_metadata').select('decision_id, status');
  assert.deepEqual(result.data, [{ decision_id: 'd1', status: 'queued' }, { decision_id: 'd2', status: 'posted' }]);
  const recorded = requests.find((r) => r.table === 'shadow_mismatches');
  assert.ok(recorded, 'the mismatch was not recorded');
  assert.equal(recorded.profile, 'dualshift');
  assert.deepEqual(recorded.body.map((m) => [m.key, m.columns, m.missing_from, m.served_from]), [
    [{ decision_id: 'd1' }, ['status'], null, 'old'],
    [{ decision_id: 'd2' }, [], 'new', 'old'],
    [{ decision_id: 'd3' }, [], 'old', 'old'],
  ]);
  assert.ok(recorded.body.every((m) => m.old_table === 'content_metadata' && m.new_table === 'content_queue'));
  assert.match(recorded.body[0].call_site, /wrapper\.test\.cjs/);
  const text = JSON.stringify(recorded.body);
  assert.ok(!text.includes('queued') && !text.includes('failed'), 'a row value was recorded');
  assert.equal(stats.shadowMismatches, 1);
});

test('reads served from the new table are compared with the old one; equal answers record nothing', async () => {
  let oldTopic = 'diet';
  const { client, requests } = fakePostgrest(routes(
    flags([{ scope: '*', name: 'shadow_reads', value: true }, { scope: '*', name: 'read_from_new_percent', value: 100 }]),
    (r) => (r.table === 'content_generation_metadata_comprehensive' ? { status: 200, body: [{ decision_id: 'd', topic: oldTopic }] } : undefined),
    (r) => (r.table === 'content_queue' ? { status: 200, body: [{ decision_id: 'd', raw_topic: 'sleep' }] } : undefined),
  ));
  const result = await dualWrite(client).from('content_generation_metadata_comprehensive').select('decision_id, topic');
  assert.deepEqual(result.data, [{ decision_id: 'd', topic: 'sleep' }]);
  const recorded = requests.filter((r) => r.table === 'shadow_mismatches');
  assert.equal(recorded.length, 1);
  assert.deepEqual(recorded[0].body.map((m) => [m.key, m.columns, m.served_from]), [[{ decision_id: 'd' }, ['topic'], 'new']]);
  oldTopic = 'sleep';
  await dualWrite(client).from('content_generation_metadata_comprehensive').select('decision_id, topic');
  assert.equal(requests.filter((r) => r.table === 'shadow_mismatches').length, 1);
  assert.equal(stats.shadowMismatches, 1);
});
