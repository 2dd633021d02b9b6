// One call with the official Anthropic TypeScript SDK, configured the way its users do it: the
// base URL and credentials come from the environment (ANTHROPIC_BASE_URL, ANTHROPIC_API_KEY or
// ANTHROPIC_AUTH_TOKEN, ANTHROPIC_CUSTOM_HEADERS). Prints one JSON object describing the outcome;
// scripts/e2e/checks.py judges it. Retries are off so an error surfaces on the first answer.
//
// Usage: node client_sdk.mjs plain|stream|tool|ratelimit|overloaded|count|models|beta|nocred
import Anthropic from '@anthropic-ai/sdk';
import { VERSION } from '@anthropic-ai/sdk/version';

const MODEL = 'claude-sonnet-4-5-20250929';
const HI = [{ role: 'user', content: 'say hi' }];
const TOOLS = [{
  name: 'get_weather',
  description: 'Current weather in a city',
  input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
}];

const usage = (u) => ({
  input_tokens: u.input_tokens,
  output_tokens: u.output_tokens,
  cache_creation_input_tokens: u.cache_creation_input_tokens,
  cache_read_input_tokens: u.cache_read_input_tokens,
});
const textOf = (msg) => msg.content.filter((b) => b.type === 'text').map((b) => b.text).join('');

async function main(scenario) {
  // No credential at all: the SDK needs to be told that this is on purpose (a null header).
  const client = scenario === 'nocred'
    ? new Anthropic({ maxRetries: 0, defaultHeaders: { authorization: null } })
    : new Anthropic({ maxRetries: 0 });
  const out = { sdk: 'typescript', version: VERSION, scenario };
  try {
    if (scenario === 'plain' || scenario === 'nocred') {
      const msg = await client.messages.create({ model: MODEL, max_tokens: 64, messages: HI });
      Object.assign(out, { text: textOf(msg), usage: usage(msg.usage), model: msg.model });
    } else if (scenario === 'stream') {
      let text = '';
      const stream = client.messages.stream({ model: MODEL, max_tokens: 64, messages: HI });
      stream.on('text', (t) => { text += t; });
      const final = await stream.finalMessage();
      Object.assign(out, { text, usage: usage(final.usage), model: final.model });
    } else if (scenario === 'tool') {
      const stream = client.messages.stream({
        model: MODEL, max_tokens: 256, tools: TOOLS,
        messages: [{ role: 'user', content: 'What is the weather in Paris? e2e:tool' }],
      });
      const final = await stream.finalMessage();
      Object.assign(out, {
        text: textOf(final),
        tool_use: final.content.filter((b) => b.type === 'tool_use').map((b) => ({ name: b.name, input: b.input })),
        stop_reason: final.stop_reason,
        usage: usage(final.usage),
      });
    } else if (scenario === 'ratelimit' || scenario === 'overloaded') {
      const marker = scenario === 'ratelimit' ? 'e2e:429' : 'e2e:529';
      await client.messages.create({ model: MODEL, max_tokens: 64, messages: [{ role: 'user', content: `hi ${marker}` }] });
      out.error = null;
    } else if (scenario === 'count') {
      const res = await client.messages.countTokens({ model: MODEL, messages: HI });
      out.input_tokens = res.input_tokens;
    } else if (scenario === 'models') {
      const ids = [];
      for await (const m of client.models.list()) ids.push(m.id);
      out.models = ids;
    } else if (scenario === 'beta') {
      // The beta namespace: an anthropic-beta header on the same endpoint.
      const msg = await client.beta.messages.create({
        model: MODEL, max_tokens: 64, messages: HI, betas: ['context-management-2025-06-27'],
      });
      Object.assign(out, { text: textOf(msg), usage: usage(msg.usage) });
    } else {
      throw new Error(`unknown scenario ${scenario}`);
    }
  } catch (e) {
    if (!(e instanceof Anthropic.APIError) || e.status === undefined) throw e;
    Object.assign(out, {
      error: e.constructor.name,
      status: e.status,
      retry_after: e.headers?.get('retry-after') ?? null,
      error_type: e.error?.error?.type ?? null,
    });
  }
  console.log(JSON.stringify(out));
}

await main(process.argv[2]);
