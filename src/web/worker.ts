// The web app's compute worker: the model, the inference engine and the training loop run here, on the wasm
// backend (its own kernel threads are nested workers when the page is cross-origin isolated), so the page stays
// responsive. Messages: src/web/protocol.ts. Long loops yield between steps so that stop, pause and resume arrive.
import { initBackend, useBackend } from '../backend/registry.js';
import { configureWasm } from '../backend/wasm/browser.js';
import type { Backend } from '../backend/backend.js';
import { mathProblems } from '../data/math.js';
import { Engine, type RoutedExperts } from '../infer/engine.js';
import { noGrad } from '../autograd/graph.js';
import { cacheWidth } from '../model/attention.js';
import { configToJson, isMoeLayer, parseConfig, type DeepseekV2Config } from '../model/config.js';
import { fetchModelFiles, loadModelFromFiles, modelToFiles } from '../model/from-files.js';
import { DeepseekV2ForCausalLM } from '../model/model.js';
import { pinWeights } from '../model/from-tensors.js';
import { preset } from '../model/presets.js';
import { paramCounts } from '../model/weights.js';
import { AdamW } from '../optim/optimizer.js';
import { BufferArena } from '../tensor/arena.js';
import { Rng } from '../tensor/random.js';
import { intTensor } from '../tensor/tensor.js';
import { BOS, EOS } from '../tokenizer/specials.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { trainBpe } from '../tokenizer/train.js';
import { trainStep } from '../train/step.js';
import type { FromWorker, ModelInfo, StepReport, ToWorker, TokenOut, TrainSettings } from './protocol.js';

const scope = globalThis as unknown as {
  postMessage(m: FromWorker, transfer?: Transferable[]): void;
  onmessage: ((e: MessageEvent<ToWorker>) => void) | null;
  crossOriginIsolated?: boolean;
};
const post = (m: FromWorker, transfer: Transferable[] = []): void => scope.postMessage(m, transfer);
// a yield to the event loop between steps (so control messages arrive) without setTimeout's 4 ms clamp
const channel = new MessageChannel();
const waiting: (() => void)[] = [];
channel.port1.onmessage = () => waiting.shift()?.();
const tick = (): Promise<void> =>
  new Promise((r) => {
    waiting.push(r);
    channel.port2.postMessage(0);
  });

let backend: Backend | null = null;
let model: DeepseekV2ForCausalLM | null = null;
let tokenizer: Tokenizer | null = null;
let source = '';
let stopGenerate = false;
let training: { paused: boolean; stop: boolean } | null = null;

function info(c: DeepseekV2Config): ModelInfo {
  const moeLayers = Array.from({ length: c.num_hidden_layers }, (_, i) => i).filter((i) => isMoeLayer(c, i));
  const H = c.num_attention_heads;
  return {
    source,
    params: paramCounts(c).total_params,
    layers: c.num_hidden_layers,
    moeLayers,
    routedExperts: c.n_routed_experts ?? 0,
    sharedExperts: c.n_shared_experts ?? 0,
    topK: c.num_experts_per_tok ?? 0,
    hidden: c.hidden_size,
    vocab: c.vocab_size,
    maxPositions: c.max_position_embeddings,
    // the engine caches float32: MLA one [latent | RoPE key] row per layer; MHA every head's key and value
    kvBytesMla: 4 * cacheWidth(c) * c.num_hidden_layers,
    kvBytesMha: 4 * H * (c.qk_nope_head_dim + c.qk_rope_head_dim + c.v_head_dim) * c.num_hidden_layers,
    hasTokenizer: tokenizer !== null,
  };
}

/** A token as the page shows it: its text, a special token by a short name, an id where there is no tokenizer. */
function tokenText(id: number, tok: Tokenizer | null): string {
  if (!tok) return `#${id} `;
  const special = tok.specials.find((s) => s.id === id)?.content;
  if (special) return special === BOS ? '⟨bos⟩' : special === EOS ? '⟨eos⟩' : `⟨${special}⟩`;
  return new TextDecoder().decode(tok.tokenBytes(id));
}

/** Routing of every prompt token as the model's input: one forward, the router's chosen experts and weights. */
function promptRouting(m: DeepseekV2ForCausalLM, ids: number[]): (RoutedExperts[] | null)[] {
  const out = noGrad(() => m.forward(intTensor([ids], undefined, { backend: m.backend })));
  const K = m.config.num_experts_per_tok ?? 0;
  const perLayer = out.router.map((r) => ({ layer: r.layer, idx: r.chosen, w: r.weights.toArray() }));
  return ids.map((_, t) =>
    perLayer.length
      ? perLayer.map((r) => ({ layer: r.layer, experts: r.idx.slice(t * K, t * K + K) as number[], weights: r.w.slice(t * K, t * K + K) }))
      : null,
  );
}

/** The generation running now (it may run beside training); loading or training another model stops it first. */
let current: Promise<void> | null = null;

async function generate(prompt: string, maxTokens: number, temperature: number, seed: number): Promise<void> {
  // the page allows one at a time; a second request is answered without touching the page's buttons
  if (current) return post({ type: 'status', text: 'a generation is already running (Stop it first)' });
  current = generateOnce(prompt, maxTokens, temperature, seed);
  try {
    await current;
  } finally {
    current = null;
  }
}

/** Stop the running generation, if any, and wait until it has ended. */
async function stopGeneration(): Promise<void> {
  if (!current) return;
  stopGenerate = true;
  await current.catch(() => undefined);
}

async function generateOnce(prompt: string, maxTokens: number, temperature: number, seed: number): Promise<void> {
  // the model and tokenizer of this generation, whatever the globals become while it runs
  const m = model;
  const tok = tokenizer;
  if (!m) throw new Error('load a model first');
  const c = m.config;
  // a JSON array of token ids is taken as the ids themselves (no tokenizer needed)
  const asIds = /^\s*\[[\d\s,]*\]\s*$/.test(prompt) ? (JSON.parse(prompt) as number[]) : null;
  if (asIds && asIds.some((id) => !Number.isInteger(id) || id < 0 || id >= c.vocab_size))
    throw new Error(`token ids must be integers in [0, ${c.vocab_size})`);
  if (!asIds && !tok) throw new Error('this model has no tokenizer: type a prompt as token ids, e.g. [1, 2, 3]');
  const bos = c.bos_token_id !== null && c.bos_token_id !== undefined ? { addBos: true, bosId: c.bos_token_id } : {};
  const ids = asIds ?? tok!.encode(prompt, bos);
  if (ids.length === 0) throw new Error('the prompt is empty');
  const routing = promptRouting(m, ids);
  post({ type: 'prompt', tokens: ids.map((id, t) => ({ id, text: tokenText(id, tok), experts: routing[t] ?? null })) });
  const engine = new Engine(m, { tokenizer: tok, kvCacheMiB: 32, maxNumSeqs: 1, maxBatchedTokens: 256 });
  if (ids.length >= c.max_position_embeddings)
    throw new Error(`the prompt is ${ids.length} tokens; the model has ${c.max_position_embeddings} positions`);
  engine.add('web', ids, {
    maxTokens: Math.min(maxTokens, c.max_position_embeddings - ids.length),
    temperature,
    seed,
    returnExperts: true,
  });
  stopGenerate = false;
  const t0 = performance.now();
  let n = 0;
  let reason = 'length';
  for (;;) {
    const events = engine.step();
    for (const e of events) {
      if (e.id >= 0) {
        n++;
        const token: TokenOut = { id: e.id, text: tokenText(e.id, tok), experts: null };
        post({ type: 'token', token, previousExperts: e.experts });
      }
      if (e.finishReason) reason = e.finishReason;
    }
    if (events.some((e) => e.finishReason) || engine.stats().running + engine.stats().waiting === 0) break;
    await tick();
    if (stopGenerate) {
      engine.abort('web');
      reason = 'stopped';
      break;
    }
  }
  post({ type: 'generated', tokS: n / ((performance.now() - t0) / 1000), tokens: n, finishReason: reason });
}

/** The bundled corpora: a Moby-Dick excerpt (fetched beside the app) or generated worked math problems. */
function corpusDocs(s: TrainSettings, text: string | undefined): string[] {
  if (s.corpus === 'math') {
    const docs: string[] = [];
    for (const p of mathProblems(s.seed)) if (docs.push(p.text) >= 3000) break;
    return docs;
  }
  const all = (text ?? '').replace(/\r\n/g, '\n');
  if (all.trim().length < 200) throw new Error('the training text is too short (at least 200 characters)');
  // documents of about 2,000 characters, split at paragraph ends where possible
  const docs: string[] = [];
  for (let at = 0; at < all.length;) {
    let end = Math.min(all.length, at + 2000);
    const para = all.indexOf('\n\n', end - 400);
    if (para > at && para < end + 400) end = para + 2;
    docs.push(all.slice(at, end));
    at = end;
  }
  return docs;
}

function trainConfig(s: TrainSettings, tok: Tokenizer): DeepseekV2Config {
  const base = configToJson(preset(s.preset === 'small' ? 'small' : 'tiny')) as Record<string, unknown>;
  const over: Record<string, unknown> = {
    vocab_size: tok.vocabSize,
    bos_token_id: tok.idOf(BOS),
    eos_token_id: tok.idOf(EOS),
    max_position_embeddings: Math.max(base['max_position_embeddings'] as number, s.seq),
  };
  if (s.preset === 'custom') {
    const E = s.experts ?? 8;
    Object.assign(over, {
      hidden_size: s.hidden ?? 64,
      num_hidden_layers: s.layers ?? 2,
      n_routed_experts: E,
      num_experts_per_tok: Math.min(2, E),
      n_group: 1,
      topk_group: 1,
      topk_method: 'greedy',
      intermediate_size: 2 * (s.hidden ?? 64),
      moe_intermediate_size: Math.max(8, (s.hidden ?? 64) / 2),
    });
  }
  return parseConfig({ ...base, ...over });
}

/** Train; however it ends (finished, stopped, or an error), training is over for the message loop. */
async function train(s: TrainSettings, text: string | undefined): Promise<void> {
  try {
    await trainRun(s, text);
  } finally {
    training = null;
  }
}

async function trainRun(s: TrainSettings, text: string | undefined): Promise<void> {
  const b = backend!;
  post({ type: 'status', text: 'training the tokenizer…' });
  await tick();
  const docs = corpusDocs(s, text);
  const tok = trainBpe(docs, { vocabSize: s.vocab, specials: [BOS, EOS] });
  const eos = tok.idOf(EOS)!;
  const stream: number[] = [];
  for (const d of docs) stream.push(...tok.encode(d), eos);
  if (stream.length < s.seq + 2) throw new Error(`the text gives ${stream.length} tokens, fewer than one sequence of ${s.seq}`);
  const config = trainConfig(s, tok);
  const m = DeepseekV2ForCausalLM.init(config, { seed: s.seed, backend: b });
  model = m;
  tokenizer = tok;
  source = `trained in this tab (${s.corpus})`;
  post({ type: 'train-started', info: info(config), tokens: stream.length });
  const opt = new AdamW(m.parameters(), { lr: s.lr, maxGradNorm: 1 });
  pinWeights(m); // only AdamW writes the weights: the wasm backend keeps them resident
  const arena = new BufferArena(b);
  const rng = new Rng(s.seed + 1);
  const coef = { alpha1: 0.003, alpha2: 0.05, alpha3: 0.02 };
  training = { paused: false, stop: false };
  const state = training;
  let step = 0;
  for (; step < s.steps && !state.stop; step++) {
    while (state.paused && !state.stop) await new Promise((r) => setTimeout(r, 50));
    if (state.stop) break;
    const x: number[] = [];
    const y: number[] = [];
    for (let i = 0; i < s.batch; i++) {
      const at = rng.int(stream.length - s.seq - 1);
      x.push(...stream.slice(at, at + s.seq));
      y.push(...stream.slice(at + 1, at + s.seq + 1));
    }
    let loss = NaN;
    let load: number[][] = [];
    const t0 = performance.now();
    trainStep(m, opt, () => ({ x: intTensor(x, [s.batch, s.seq], { backend: b }), y: intTensor(y, [s.batch, s.seq], { backend: b }) }), {
      coef,
      arena,
      onMicro: (o) => {
        loss = o.lossCe.item();
        load = o.router.map((r) => {
          const total = r.load.reduce((a, v) => a + v, 0) || 1;
          return r.load.map((v) => v / total);
        });
      },
    });
    const report: StepReport = { step: step + 1, steps: s.steps, loss, tokS: (s.batch * s.seq) / ((performance.now() - t0) / 1000), load };
    post({ type: 'step', report });
    await tick();
  }
  post({ type: 'trained', steps: step, stopped: state.stop });
}

async function handle(m: ToWorker): Promise<void> {
  switch (m.type) {
    case 'init': {
      configureWasm({ wasmBase: m.wasmBase, workerUrl: m.workerUrl, threads: m.threads });
      backend = await initBackend('wasm');
      useBackend('wasm');
      post({ type: 'ready', backend: backend.name, threads: backend.threads?.() ?? 1, isolated: scope.crossOriginIsolated === true });
      return;
    }
    case 'load-files':
    case 'load-url': {
      await stopGeneration(); // a generation beside training must not see the model change under it
      post({ type: 'status', text: 'loading the model…' });
      const files =
        m.type === 'load-url'
          ? await fetchModelFiles(new URL(m.url, location.href))
          : new Map(m.files.map(([n, b]) => [n, new Uint8Array(b)]));
      const loaded = loadModelFromFiles(files, { backend: backend! });
      model = loaded.model;
      tokenizer = loaded.tokenizer;
      source = m.type === 'load-url' ? m.url : [...files.keys()].join(', ');
      post({ type: 'loaded', info: info(loaded.config) });
      return;
    }
    case 'generate':
      return generate(m.prompt, m.maxTokens, m.temperature, m.seed);
    case 'stop-generate':
      stopGenerate = true;
      return;
    case 'train':
      await stopGeneration();
      return train(m.settings, m.corpusText);
    case 'pause':
      if (training) training.paused = true;
      return;
    case 'resume':
      if (training) training.paused = false;
      return;
    case 'stop-train':
      if (training) training.stop = true;
      return;
    case 'download': {
      if (!model) throw new Error('there is no model to download');
      const files = [...modelToFiles(model, tokenizer)].map(
        ([n, b]) => [n, b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer] as [string, ArrayBuffer],
      );
      post(
        { type: 'files', files },
        files.map(([, b]) => b),
      );
      return;
    }
  }
}

// One message at a time, except the controls, which must reach a running loop, and a generation while training
// runs: the two loops take turns at their ticks (each kernel call runs whole), and the generation sees the weights
// as training leaves them step by step, which is what "generate from the model being trained" means.
let queue: Promise<void> = Promise.resolve();
const CONTROLS = new Set(['stop-generate', 'pause', 'resume', 'stop-train']);
scope.onmessage = (e) => {
  const run = (): Promise<void> =>
    handle(e.data).catch((err: unknown) => post({ type: 'error', message: (err as Error).message ?? String(err), during: e.data.type }));
  if (CONTROLS.has(e.data.type) || (e.data.type === 'generate' && training)) void run();
  else queue = queue.then(run);
};
