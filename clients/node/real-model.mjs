// Drives the official `ollama` and `openai` npm clients through a running DeeperSensor server in front of a
// real Ollama, as internal/realollama/node_test.go runs it: DS_URL is the server's base URL, DS_API_KEY the
// bearer credential, DS_MODEL the model, DS_PROMPT the prompt and DS_NUM_PREDICT the tokens to generate, with
// seed 42 at temperature 0 so that the answers can be compared with direct calls. It prints what the clients
// saw as one JSON object, and exits 1 if a call failed.
import { Ollama } from 'ollama';
import OpenAI from 'openai';

const { DS_URL: url, DS_API_KEY: apiKey, DS_MODEL: model, DS_PROMPT: prompt } = process.env;
const numPredict = Number(process.env.DS_NUM_PREDICT);
const messages = [{ role: 'user', content: prompt }];
const options = { seed: 42, temperature: 0, num_predict: numPredict };

// streamed reads a stream to its end: the number of parts that carried text, and the text.
async function streamed(stream, text) {
  const sum = { parts: 0, text: '' };
  for await (const part of stream) {
    const t = text(part) ?? '';
    if (t !== '') sum.parts++;
    sum.text += t;
  }
  return sum;
}

const ollama = new Ollama({ host: `${url}/ollama`, headers: { Authorization: `Bearer ${apiKey}` } });
const openai = new OpenAI({ baseURL: `${url}/openai/v1`, apiKey, maxRetries: 0 });
const completion = { model, messages, seed: 42, temperature: 0, max_tokens: numPredict };

const result = {
  ollamaChat: (await ollama.chat({ model, messages, options })).message.content,
  ollamaChatStream: await streamed(await ollama.chat({ model, messages, options, stream: true }), (p) => p.message.content),
  ollamaGenerate: (await ollama.generate({ model, prompt, options })).response,
  ollamaGenerateStream: await streamed(await ollama.generate({ model, prompt, options, stream: true }), (p) => p.response),
  openai: (await openai.chat.completions.create(completion)).choices[0].message.content,
  openaiStream: await streamed(
    await openai.chat.completions.create({ ...completion, stream: true }),
    (c) => c.choices[0]?.delta.content,
  ),
};
console.log(JSON.stringify(result));
