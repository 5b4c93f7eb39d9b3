// The web app's page: it draws, the compute worker (src/web/worker.ts) computes. Generate streams tokens coloured by
// their routed experts (hover for every MoE layer's top-k and gate weights, plus the shared experts), a per-layer
// expert-load heatmap and the KV cache MLA needs against MHA; Train runs a small model in the worker with a live
// loss curve (uPlot), tokens/s and expert load over time, pause/resume, and a download of the checkpoint as HF files.
import uPlot from 'uplot';
import type { RoutedExperts } from '../infer/engine.js';
import type { FromWorker, ModelInfo, StepReport, ToWorker, TokenOut, TrainSettings } from './protocol.js';

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => document.getElementById(id) as T;
const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
const send = (m: ToWorker, transfer: Transferable[] = []): void => worker.postMessage(m, transfer);

/** State the tests read (window.dsv2): what the page showed, so a test can compare it with the model. */
interface PageState {
  ready: boolean;
  backend: string;
  threads: number;
  info: ModelInfo | null;
  tokens: TokenOut[];
  generating: boolean;
  /** The last generation's and training step's tokens/s. */
  genTokS: number;
  trainTokS: number[];
  losses: number[];
  trained: boolean;
  files: string[];
  errors: string[];
}
const state: PageState = {
  ready: false,
  backend: '',
  threads: 0,
  info: null,
  tokens: [],
  generating: false,
  genTokS: 0,
  trainTokS: [],
  losses: [],
  trained: false,
  files: [],
  errors: [],
};
(window as unknown as { dsv2: PageState }).dsv2 = state;

// ---- tabs ------------------------------------------------------------------------------------------------------
for (const tab of document.querySelectorAll<HTMLButtonElement>('.tab')) {
  tab.onclick = () => {
    document.querySelectorAll('.tab').forEach((t) => t.classList.toggle('active', t === tab));
    document.querySelectorAll<HTMLElement>('.view').forEach((v) => (v.hidden = v.id !== tab.dataset['tab']));
  };
}

const status = (text: string): void => {
  $('status').textContent = text;
};

// ---- colours ---------------------------------------------------------------------------------------------------
/** A distinct hue per routed expert (golden-angle steps, so neighbours differ). */
const expertColour = (e: number, alpha = 0.35): string => `hsla(${(e * 137.508) % 360}, 70%, 50%, ${alpha})`;

// ---- generate --------------------------------------------------------------------------------------------------
const output = $('output');
const tooltip = $('tooltip');
const colourLayer = $<HTMLSelectElement>('colour-layer');

function showInfo(info: ModelInfo): void {
  state.info = info;
  $('model-info').textContent =
    `${info.source}: ${(info.params / 1e6).toFixed(2)} M parameters, ${info.layers} layers (MoE: ${info.moeLayers.join(', ') || 'none'}), ` +
    `${info.routedExperts} routed experts (top-${info.topK}) + ${info.sharedExperts} shared, vocab ${info.vocab}` +
    (info.hasTokenizer ? '' : ' — no tokenizer: load tokenizer.json with the weights to generate');
  colourLayer.replaceChildren(
    ...info.moeLayers.map((l) => {
      const o = document.createElement('option');
      o.value = String(l);
      o.textContent = String(l);
      return o;
    }),
  );
  colourLayer.value = String(info.moeLayers[info.moeLayers.length - 1] ?? '');
}

function routingOf(t: TokenOut, layer: number): RoutedExperts | undefined {
  return t.experts?.find((r) => r.layer === layer);
}

function paintToken(span: HTMLElement, t: TokenOut): void {
  const r = routingOf(t, Number(colourLayer.value));
  span.classList.toggle('unrouted', !r);
  span.style.background = r ? expertColour(r.experts[0]!) : '';
  span.dataset['experts'] = r ? r.experts.join(',') : '';
}

function addToken(t: TokenOut, prompt: boolean): void {
  const span = document.createElement('span');
  span.className = `tok${prompt ? ' prompt' : ''}`;
  span.textContent = t.text;
  span.dataset['index'] = String(state.tokens.length);
  state.tokens.push(t);
  paintToken(span, t);
  output.append(span);
}

function repaint(): void {
  output.querySelectorAll<HTMLElement>('.tok').forEach((s) => paintToken(s, state.tokens[Number(s.dataset['index'])]!));
  drawHeatmap();
  drawKv();
}
colourLayer.onchange = repaint;

output.onmousemove = (e) => {
  const span = (e.target as HTMLElement).closest<HTMLElement>('.tok');
  const info = state.info;
  if (!span || !info) {
    tooltip.hidden = true;
    return;
  }
  const t = state.tokens[Number(span.dataset['index'])]!;
  const rows = (t.experts ?? []).map(
    (r) =>
      `layer ${r.layer}: ` +
      r.experts
        .map((x, i) => `<span class="swatch" style="background:${expertColour(x, 0.9)}"></span>${x} (${r.weights[i]!.toFixed(3)})`)
        .join('  '),
  );
  const shared = info.sharedExperts
    ? `shared experts (every token): ${Array.from({ length: info.sharedExperts }, (_, i) => `S${i}`).join(' ')}`
    : '';
  tooltip.innerHTML =
    `<b>${escapeHtml(JSON.stringify(t.text))}</b> id ${t.id}<br>` +
    (rows.length ? rows.join('<br>') : 'not routed yet (the model has not read this token)') +
    (shared ? `<br>${shared}` : '');
  tooltip.hidden = false;
  tooltip.style.left = `${e.clientX + 14}px`;
  tooltip.style.top = `${e.clientY + 14}px`;
};
output.onmouseleave = () => (tooltip.hidden = true);

function escapeHtml(s: string): string {
  return s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
}

/** Counts [moe layer][expert] of the routed assignments of the text so far. */
function loadCounts(): number[][] {
  const info = state.info!;
  const counts = info.moeLayers.map(() => new Array<number>(info.routedExperts).fill(0));
  for (const t of state.tokens)
    for (const r of t.experts ?? []) {
      const row = counts[info.moeLayers.indexOf(r.layer)];
      if (row) for (const e of r.experts) row[e]!++;
    }
  return counts;
}

function drawGrid(canvas: HTMLCanvasElement, rows: number[][]): void {
  const ctx = canvas.getContext('2d')!;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!rows.length || !rows[0]!.length) return;
  const w = canvas.width / rows[0]!.length;
  const h = canvas.height / rows.length;
  rows.forEach((row, i) => {
    const max = Math.max(...row, 1e-9);
    row.forEach((v, j) => {
      ctx.fillStyle = `rgba(53, 88, 214, ${v / max})`;
      ctx.fillRect(j * w, i * h, Math.ceil(w), Math.ceil(h));
    });
  });
}

function drawHeatmap(): void {
  if (state.info) drawGrid($<HTMLCanvasElement>('heatmap'), loadCounts());
}

function drawKv(): void {
  const info = state.info;
  if (!info) return;
  const n = state.tokens.length;
  const kib = (b: number): string => `${(b / 1024).toFixed(1)} KiB`;
  const mla = n * info.kvBytesMla;
  const mha = n * info.kvBytesMha;
  $('kv').innerHTML =
    `${n} tokens<br>MLA (latent + RoPE key): ${kib(mla)} <div class="kvbar mla" style="width:${(100 * info.kvBytesMla) / info.kvBytesMha}%"></div>` +
    `MHA with these heads: ${kib(mha)} <div class="kvbar mha" style="width:100%"></div>` +
    `MLA keeps ${((100 * info.kvBytesMla) / info.kvBytesMha).toFixed(1)}% of it (${(100 - (100 * info.kvBytesMla) / info.kvBytesMha).toFixed(1)}% smaller)`;
}

function resetOutput(): void {
  output.replaceChildren();
  state.tokens = [];
  $('gen-stats').textContent = '';
}

$('load').onclick = async () => {
  const source = document.querySelector<HTMLInputElement>('input[name=source]:checked')!.value;
  if (source === 'served') send({ type: 'load-url', url: new URL('model/', location.href).href });
  else if (source === 'files') {
    const list = $<HTMLInputElement>('files').files;
    if (!list?.length) return status('choose the model files first (config.json, model.safetensors, tokenizer.json — or one .gguf)');
    const files: [string, ArrayBuffer][] = [];
    for (const f of list) files.push([f.name, await f.arrayBuffer()]);
    send(
      { type: 'load-files', files },
      files.map(([, b]) => b),
    );
  } else if (source === 'api') {
    const r = await fetch('v1/models');
    if (!r.ok) return status(`no dsv2 serve behind this page (GET /v1/models: HTTP ${r.status}); start dsv2 web with --api URL`);
    const j = (await r.json()) as { data: { id: string }[] };
    status(`using ${j.data[0]?.id ?? 'the served model'} through /v1/completions`);
    state.info = null;
  } else status('the trained model is used for generation as soon as training starts');
};

/** One generation at a time: Generate is off and Stop on while one runs, and both are put back when it ends. */
function generatingUi(on: boolean): void {
  state.generating = on;
  $<HTMLButtonElement>('generate-btn').disabled = on;
  $<HTMLButtonElement>('stop-btn').disabled = !on;
}

/** The request of a generation by `dsv2 serve`, so that Stop can abort it. */
let remote: AbortController | null = null;

$('generate-btn').onclick = () => {
  if (state.generating) return;
  const source = document.querySelector<HTMLInputElement>('input[name=source]:checked')!.value;
  resetOutput();
  const maxTokens = Number($<HTMLInputElement>('max-tokens').value);
  const temperature = Number($<HTMLInputElement>('temperature').value);
  const seed = Number($<HTMLInputElement>('seed').value);
  const prompt = $<HTMLTextAreaElement>('prompt').value;
  generatingUi(true);
  if (source === 'api') return void generateRemote(prompt, maxTokens, temperature, seed);
  send({ type: 'generate', prompt, maxTokens, temperature, seed });
};
$('stop-btn').onclick = () => (remote ? remote.abort() : send({ type: 'stop-generate' }));

/** Generation by a running `dsv2 serve` (OpenAI streaming, with its return_experts extension), through the proxy. */
async function generateRemote(prompt: string, maxTokens: number, temperature: number, seed: number): Promise<void> {
  remote = new AbortController();
  const signal = remote.signal;
  let n = 0;
  const t0 = performance.now();
  try {
    const m = await fetch('v1/models', { signal });
    if (!m.ok) throw new Error(`GET /v1/models answered HTTP ${m.status}`);
    const models = (await m.json()) as { data: { id: string }[] };
    const r = await fetch('v1/completions', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        model: models.data[0]?.id,
        prompt,
        max_tokens: maxTokens,
        temperature,
        seed,
        stream: true,
        return_experts: true,
      }),
      signal,
    });
    if (!r.ok || !r.body) throw new Error(`dsv2 serve answered HTTP ${r.status}: ${await r.text()}`);
    addToken({ id: -1, text: prompt, experts: null }, true);
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let nl: number;
      while ((nl = buf.indexOf('\n\n')) >= 0) {
        const line = buf.slice(0, nl).replace(/^data: /, '');
        buf = buf.slice(nl + 2);
        if (line === '[DONE]') continue;
        const chunk = JSON.parse(line) as { choices: { text: string; experts?: RoutedExperts[][] }[]; error?: { message: string } };
        if (chunk.error) throw new Error(`dsv2 serve: ${chunk.error.message}`);
        const c = chunk.choices[0];
        if (!c) continue;
        // a token's experts are those of the position it was predicted from: the token before it
        const prev = state.tokens[state.tokens.length - 1];
        if (prev && c.experts?.[0]) prev.experts = c.experts[0];
        addToken({ id: -1, text: c.text, experts: null }, false);
        n++;
      }
    }
    state.genTokS = n / ((performance.now() - t0) / 1000);
    $('gen-stats').textContent = `${n} tokens at ${state.genTokS.toFixed(1)} tok/s from dsv2 serve`;
  } catch (e) {
    if (signal.aborted) $('gen-stats').textContent = `${n} tokens (stopped)`;
    else {
      state.errors.push((e as Error).message);
      status(`error: ${(e as Error).message}`);
    }
  } finally {
    remote.abort(); // after an error mid-stream, dsv2 serve must not go on generating for nobody (a no-op once done)
    remote = null;
    generatingUi(false);
    repaint();
  }
}

// ---- train -----------------------------------------------------------------------------------------------------
let lossPlot: uPlot | null = null;
const lossData: [number[], number[]] = [[], []];
let loadHistory: number[][][] = []; // [step][layer][expert]

function trainSettings(): TrainSettings {
  const num = (id: string): number => Number($<HTMLInputElement>(id).value);
  return {
    corpus: document.querySelector<HTMLInputElement>('input[name=corpus]:checked')!.value as TrainSettings['corpus'],
    preset: document.querySelector<HTMLInputElement>('input[name=preset]:checked')!.value as TrainSettings['preset'],
    hidden: num('hidden'),
    layers: num('layers'),
    experts: num('experts'),
    vocab: num('vocab'),
    steps: num('steps'),
    batch: num('batch'),
    seq: num('seq'),
    lr: num('lr'),
    seed: 0,
  };
}

$('train-btn').onclick = async () => {
  const s = trainSettings();
  let corpusText: string | undefined;
  if (s.corpus === 'pasted') corpusText = $<HTMLTextAreaElement>('train-text').value;
  if (s.corpus === 'moby-dick') corpusText = await (await fetch('corpus/moby-dick.txt')).text();
  lossData[0].length = 0;
  lossData[1].length = 0;
  loadHistory = [];
  state.losses = [];
  state.trainTokS = [];
  state.trained = false;
  lossPlot?.destroy();
  lossPlot = new uPlot(
    {
      width: 720,
      height: 240,
      title: 'training loss (cross-entropy)',
      scales: { x: { time: false } },
      series: [{ label: 'step' }, { label: 'loss', stroke: '#3558d6' }],
    },
    lossData,
    $('loss-chart'),
  );
  for (const id of ['pause-btn', 'stop-train-btn']) $<HTMLButtonElement>(id).disabled = false;
  $<HTMLButtonElement>('train-btn').disabled = true;
  send({ type: 'train', settings: s, ...(corpusText !== undefined ? { corpusText } : {}) });
};
$('pause-btn').onclick = () => {
  send({ type: 'pause' });
  $<HTMLButtonElement>('pause-btn').disabled = true;
  $<HTMLButtonElement>('resume-btn').disabled = false;
};
$('resume-btn').onclick = () => {
  send({ type: 'resume' });
  $<HTMLButtonElement>('pause-btn').disabled = false;
  $<HTMLButtonElement>('resume-btn').disabled = true;
};
$('stop-train-btn').onclick = () => send({ type: 'stop-train' });
$('download-btn').onclick = () => send({ type: 'download' });

function onStep(r: StepReport): void {
  lossData[0].push(r.step);
  lossData[1].push(r.loss);
  state.losses.push(r.loss);
  state.trainTokS.push(r.tokS);
  lossPlot?.setData(lossData);
  loadHistory.push(r.load);
  $('train-stats').textContent =
    `step ${r.step}/${r.steps} · loss ${r.loss.toFixed(3)} · ${Math.round(r.tokS).toLocaleString('en-US')} tok/s`;
  const box = $('train-heatmaps');
  r.load.forEach((_, layer) => {
    let c = box.querySelectorAll('canvas')[layer];
    if (!c) {
      const label = document.createElement('div');
      label.className = 'caption';
      label.textContent = `MoE layer ${state.info?.moeLayers[layer] ?? layer}`;
      c = document.createElement('canvas');
      c.width = 720;
      c.height = Math.max(48, 12 * r.load[layer]!.length);
      box.append(label, c);
    }
    // columns are steps, rows experts: transpose the history of this layer
    const E = r.load[layer]!.length;
    drawGrid(
      c,
      Array.from({ length: E }, (_, e) => loadHistory.map((h) => h[layer]?.[e] ?? 0)),
    );
  });
}

// ---- messages from the worker -------------------------------------------------------------------------------------
worker.onmessage = (e: MessageEvent<FromWorker>) => {
  const m = e.data;
  switch (m.type) {
    case 'ready':
      state.ready = true;
      state.backend = m.backend;
      state.threads = m.threads;
      $('backend').textContent =
        `backend ${m.backend}, ${m.threads} thread${m.threads === 1 ? '' : 's'}${m.isolated ? '' : ' (not cross-origin isolated: one thread)'}`;
      return;
    case 'status':
      return status(m.text);
    case 'loaded':
      status('model loaded');
      showInfo(m.info);
      return;
    case 'prompt':
      for (const t of m.tokens) addToken(t, true);
      drawHeatmap();
      drawKv();
      return;
    case 'token': {
      const prev = state.tokens[state.tokens.length - 1];
      if (prev && m.previousExperts) {
        prev.experts = m.previousExperts;
        const span = output.querySelector<HTMLElement>(`.tok[data-index="${state.tokens.length - 1}"]`);
        if (span) paintToken(span, prev);
      }
      addToken(m.token, false);
      drawHeatmap();
      drawKv();
      return;
    }
    case 'generated':
      generatingUi(false);
      state.genTokS = m.tokS;
      $('gen-stats').textContent = `${m.tokens} tokens at ${m.tokS.toFixed(1)} tok/s (${m.finishReason})`;
      return;
    case 'train-started':
      showInfo(m.info);
      status(`training on ${m.tokens.toLocaleString('en-US')} tokens`);
      $<HTMLButtonElement>('download-btn').disabled = false;
      document.querySelector<HTMLInputElement>('input[name=source][value=trained]')!.checked = true;
      return;
    case 'step':
      return onStep(m.report);
    case 'trained':
      state.trained = true;
      status(`training ${m.stopped ? 'stopped' : 'finished'} after ${m.steps} steps`);
      for (const id of ['pause-btn', 'resume-btn', 'stop-train-btn']) $<HTMLButtonElement>(id).disabled = true;
      $<HTMLButtonElement>('train-btn').disabled = false;
      return;
    case 'files': {
      const box = $('downloads');
      box.replaceChildren();
      state.files = m.files.map(([n]) => n);
      for (const [name, bytes] of m.files) {
        const a = document.createElement('a');
        a.href = URL.createObjectURL(new Blob([bytes]));
        a.download = name;
        a.textContent = name;
        box.append(a);
        a.click();
      }
      return;
    }
    case 'error':
      state.errors.push(m.message);
      status(`error: ${m.message}`);
      if (m.during === 'generate') generatingUi(false);
      if (m.during === 'train') {
        for (const id of ['pause-btn', 'resume-btn', 'stop-train-btn']) $<HTMLButtonElement>(id).disabled = true;
        $<HTMLButtonElement>('train-btn').disabled = false;
      }
      return;
  }
};

send({
  type: 'init',
  threads: Math.min(8, navigator.hardwareConcurrency || 1),
  wasmBase: new URL('wasm/', location.href).href,
  workerUrl: new URL('wasm-worker.js', location.href).href,
});
