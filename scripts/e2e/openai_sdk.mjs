// One call with the official OpenAI Node SDK through sluice's openai route, for
// scripts/e2e/openai_sdk.py, which judges the outcome. Prints one JSON line: {"usage": …} with
// the SDK's own final usage, {"error": {"class", "status", "message"}} with the error it raised,
// or {"version": …}. Retries stay at the SDK's default, as its users run it.
//
// Usage: node openai_sdk.mjs responses|responses-stream|responses-huge|chat-stream|embeddings|error:<size>|version
//        BASE_URL API_KEY [ACCESS_KEY]
import { readFileSync } from 'node:fs';
import OpenAI from 'openai';

const [op, baseURL, apiKey, access] = process.argv.slice(2);

function client() {
  const defaultHeaders = access ? { 'x-sluice-key': access } : {};
  return new OpenAI({ baseURL, apiKey, defaultHeaders });
}

async function usageOf(op) {
  const openai = client();
  switch (op) {
    case 'responses':
      return (await openai.responses.create({ model: 'gpt-5.5', input: 'ping' })).usage;
    case 'responses-stream':
    case 'responses-huge': {
      let usage = null;
      const input = op === 'responses-huge' ? 'e2e:huge' : 'ping';
      const stream = await openai.responses.create({ model: 'gpt-5.3-codex', input, stream: true });
      for await (const event of stream) {
        if (event.type === 'response.completed') usage = event.response.usage;
      }
      return usage;
    }
    case 'chat-stream': {
      let usage = null;
      const stream = await openai.chat.completions.create({
        model: 'gpt-5.4',
        messages: [{ role: 'user', content: 'ping' }],
        stream: true,
        stream_options: { include_usage: true },
      });
      for await (const chunk of stream) {
        if (chunk.usage) usage = chunk.usage;
      }
      return usage;
    }
    case 'embeddings':
      return (await openai.embeddings.create({ model: 'text-embedding-3-small', input: 'ping' })).usage;
    default:
      throw new Error(`unknown operation ${op}`);
  }
}

function classOf(err) {
  for (const name of ['AuthenticationError', 'RateLimitError', 'BadRequestError', 'InternalServerError']) {
    if (err instanceof OpenAI[name]) return name;
  }
  return err instanceof OpenAI.APIError ? 'APIError' : err.constructor.name;
}

async function main() {
  if (op === 'version') {
    const pkg = new URL('./node_modules/openai/package.json', import.meta.url);
    return { version: JSON.parse(readFileSync(pkg, 'utf8')).version };
  }
  if (op.startsWith('error:')) {
    const size = Number(op.slice('error:'.length));
    try {
      await client().responses.create({ model: 'gpt-5.5', input: size ? 'x'.repeat(size) : 'ping' });
      return { error: { class: null, status: null, message: 'no error raised' } };
    } catch (err) {
      return { error: { class: classOf(err), status: err.status ?? null, message: String(err.message) } };
    }
  }
  return { usage: await usageOf(op) };
}

console.log(JSON.stringify(await main()));
