// Drives the official `ollama` npm client against the Ollama-compatible API of a running DeeperSensor server,
// as server/ollama_node_test.go runs it: DS_BASE_URL is the API's base URL (…/ollama), DS_API_KEY the bearer
// credential, DS_MODEL a model to chat with. With the argument `midway` it only streams one chat, which the
// test's model server breaks in the middle. It prints what the client saw as one JSON object, for the Go
// test to check, and exits 1 if a call failed in a way the test does not expect.
import { Ollama } from 'ollama';

import { rejection } from './rejection.mjs';

const { DS_BASE_URL: host, DS_API_KEY: apiKey, DS_MODEL: model } = process.env;
const client = (key) => new Ollama({ host, headers: { Authorization: `Bearer ${key}` } });
const ollama = client(apiKey);
const messages = [
  { role: 'system', content: 'You tell short stories.' },
  { role: 'user', content: 'Once upon a time' },
];

// failure describes the error a call is expected to throw.
async function failure(call) {
  const err = await rejection(call);
  return { name: err.name, status: err.status_code ?? null, message: err.message };
}

// streamed reads a stream to its end and sums up its parts; text picks a part's text.
async function streamed(stream, text) {
  const sum = { parts: 0, text: '', last: null };
  for await (const part of stream) {
    sum.parts++;
    sum.text += text(part);
    sum.last = part;
  }
  return sum;
}

const result = {};
if (process.argv[2] === 'midway') {
  const sum = { parts: 0, text: '' };
  result.midway = await failure(async () => {
    for await (const part of await ollama.chat({ model, messages, stream: true })) {
      sum.parts++;
      sum.text += part.message.content;
    }
  });
  result.midway.before = sum;
} else {
  result.chat = await ollama.chat({ model, messages, options: { temperature: 0, num_predict: 12 } });
  result.streamed = await streamed(await ollama.chat({ model, messages, stream: true }), (p) => p.message.content);
  result.generate = await ollama.generate({ model, prompt: 'Once upon a time', system: 'Be brief.' });
  result.streamedGenerate = await streamed(
    await ollama.generate({ model, prompt: 'Once upon a time', stream: true }),
    (p) => p.response,
  );
  result.models = (await ollama.list()).models.map((m) => m.name);
  result.show = await ollama.show({ model });
  result.embed = await ollama.embed({ model, input: ['one text', 'another text'] });
  result.version = await ollama.version();
  result.badKey = await failure(() => client('ds_not-a-key').list());
  result.unknownModel = await failure(() => ollama.chat({ model: 'llama9:70b', messages }));
  result.pull = await failure(() => ollama.pull({ model }));
}
console.log(JSON.stringify(result));
