// The generated wrapper for a plan whose content_queue merges its twins (precedence = "coalesce"):
// the sync triggers write content_queue, so the wrapper writes only the old table; other tables are
// dual-written as before. Run by tests/codemods/test_wrapper_ts.py (WRAPPER_DIR holds the compiled module).
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { createClient } = require('@supabase/supabase-js');

const { dualWrite, stats, resetFlags, settings } = require(path.join(process.env.WRAPPER_DIR, 'dualWrite.js'));
settings.logger = () => {};

function fakePostgrest() {
  const requests = [];
  const fetch = async (input, init = {}) => {
    const url = new URL(typeof input === 'string' ? input : input.url);
    const table = url.pathname.replace('/rest/v1/', '');
    requests.push({ method: init.method ?? 'GET', table, body: init.body ? JSON.parse(init.body) : null });
    const sent = init.body ? JSON.parse(init.body) : [];
    const body = (init.method ?? 'GET') === 'GET' ? [] : Array.isArray(sent) ? sent : [sent];
    return new Response(JSON.stringify(body), { status: 201, headers: { 'content-type': 'application/json' } });
  };
  const client = createClient('http://db.local', 'anon-key', { global: { fetch }, realtime: { transport: class {} } });
  return { client, writes: () => requests.filter((r) => r.method !== 'GET').map((r) => r.table) };
}

test.beforeEach(() => {
  resetFlags();
  for (const key of Object.keys(stats)) stats[key] = 0;
});

test('a write on a twin of a merging table goes to the old table only, counted as mirrored by the triggers', async () => {
  const { client, writes } = fakePostgrest();
  const result = await dualWrite(client).from('content_metadata').insert({ decision_id: 'd1', content: 'x' }).select();
  assert.deepEqual(result.data, [{ decision_id: 'd1', content: 'x' }]);
  await dualWrite(client).from('content_generation_metadata_comprehensive').update({ topic: 'sleep' }).eq('decision_id', 'd1');
  await dualWrite(client).from('content_metadata').delete().eq('decision_id', 'd1');
  assert.deepEqual(writes(), ['content_metadata', 'content_generation_metadata_comprehensive', 'content_metadata']);
  assert.equal(stats.mirroredByTriggers, 3);
  assert.equal(stats.mirrored, 0);
  assert.equal(stats.failed, 0);
});

test('tables that do not merge their sources are still dual-written', async () => {
  const { client, writes } = fakePostgrest();
  await dualWrite(client).from('tweets').insert({ tweet_id: 't1', decision_id: 'd1', text: 'hi', url: 'u' }).select();
  assert.deepEqual(writes(), ['tweets', 'posted_content']);
  assert.equal(stats.mirrored, 1);
  assert.equal(stats.mirroredByTriggers, 0);
});
