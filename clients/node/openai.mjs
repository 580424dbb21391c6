// Drives the official `openai` npm client against the OpenAI-compatible API of a running DeeperSensor server,
// as server/openai_test.go runs it: DS_BASE_URL is the API's base URL (…/openai/v1), DS_API_KEY the bearer
// credential, DS_MODEL a chat and embedding model, DS_MODEL_ID a model id to look up (one with '/' and ':').
// It prints what the client saw as one JSON object, for the Go test to check, and exits 1 if a call failed
// in a way the test does not expect.
import OpenAI from 'openai';

const { DS_BASE_URL: baseURL, DS_API_KEY: apiKey, DS_MODEL: model, DS_MODEL_ID: modelID } = process.env;
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const messages = [
  { role: 'system', content: 'Be brief.' },
  { role: 'user', content: 'Tell me a story' },
];

// failure describes the typed error a call is expected to throw.
async function failure(call) {
  try {
    await call();
  } catch (err) {
    if (!(err instanceof OpenAI.APIError)) throw err;
    return { class: err.constructor.name, status: err.status, type: err.type, code: err.code, param: err.param };
  }
  throw new Error('the call did not fail');
}

const result = {};

const plain = await client.chat.completions.create({ model, messages, temperature: 0.2, max_tokens: 40 });
result.plain = {
  object: plain.object,
  model: plain.model,
  content: plain.choices[0].message.content,
  finish_reason: plain.choices[0].finish_reason,
  usage: plain.usage,
};

const stream = await client.chat.completions.create({
  model,
  messages,
  stream: true,
  stream_options: { include_usage: true },
});
result.streamed = { content: '', chunks: 0, role: null, finish_reason: null, usage: null };
for await (const chunk of stream) {
  result.streamed.chunks++;
  const choice = chunk.choices[0];
  if (choice) {
    result.streamed.role ??= choice.delta.role ?? null;
    result.streamed.content += choice.delta.content ?? '';
    result.streamed.finish_reason = choice.finish_reason ?? result.streamed.finish_reason;
  }
  if (chunk.usage) result.streamed.usage = chunk.usage;
}

const models = [];
for await (const m of client.models.list()) models.push(m.id);
result.models = models;
result.model = await client.models.retrieve(modelID);

// The client asks for base64 embeddings unless told otherwise, and decodes them.
const embedding = await client.embeddings.create({ model, input: ['one text', 'another text'] });
result.embeddings = {
  model: embedding.model,
  vectors: embedding.data.map((d) => Array.from(d.embedding)),
  usage: embedding.usage,
};

result.badKey = await failure(() => new OpenAI({ baseURL, apiKey: 'ds_not-a-key', maxRetries: 0 }).models.list());
result.unknownModel = await failure(() => client.chat.completions.create({ model: 'llama9:70b', messages }));

console.log(JSON.stringify(result));
