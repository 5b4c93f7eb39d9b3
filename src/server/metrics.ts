// /metrics in the Prometheus text exposition format (version 0.0.4): counters, gauges from the engine's latest
// statistics, and histograms of time to first token and inter-token latency. A handful of metrics needs no
// client library; names follow vLLM's (`vllm:` → `dsv2_`).
import type { EngineStats } from '../infer/engine.js';

class Histogram {
  readonly counts: number[];
  sum = 0;
  count = 0;

  constructor(readonly bounds: readonly number[]) {
    this.counts = new Array<number>(bounds.length).fill(0);
  }

  observe(v: number): void {
    this.sum += v;
    this.count++;
    for (let i = 0; i < this.bounds.length; i++) if (v <= this.bounds[i]!) this.counts[i]!++;
  }

  lines(name: string, help: string): string[] {
    return [
      `# HELP ${name} ${help}`,
      `# TYPE ${name} histogram`,
      ...this.bounds.map((b, i) => `${name}_bucket{le="${b}"} ${this.counts[i]}`),
      `${name}_bucket{le="+Inf"} ${this.count}`,
      `${name}_sum ${this.sum}`,
      `${name}_count ${this.count}`,
    ];
  }
}

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export class Metrics {
  /** Finished requests by endpoint and HTTP status. */
  private readonly requests = new Map<string, number>();
  promptTokens = 0;
  generationTokens = 0;
  readonly ttft = new Histogram(LATENCY_BUCKETS);
  readonly itl = new Histogram(LATENCY_BUCKETS);

  request(endpoint: string, status: number): void {
    const key = `endpoint="${endpoint}",status="${status}"`;
    this.requests.set(key, (this.requests.get(key) ?? 0) + 1);
  }

  render(stats: EngineStats | null): string {
    const out: string[] = [
      '# HELP dsv2_requests_total HTTP requests answered, by endpoint and status.',
      '# TYPE dsv2_requests_total counter',
      ...[...this.requests].map(([k, v]) => `dsv2_requests_total{${k}} ${v}`),
      '# HELP dsv2_prompt_tokens_total Prompt tokens of accepted generation requests.',
      '# TYPE dsv2_prompt_tokens_total counter',
      `dsv2_prompt_tokens_total ${this.promptTokens}`,
      '# HELP dsv2_generation_tokens_total Tokens generated.',
      '# TYPE dsv2_generation_tokens_total counter',
      `dsv2_generation_tokens_total ${this.generationTokens}`,
    ];
    if (stats) {
      const gauge = (name: string, help: string, v: number): string[] => [`# HELP ${name} ${help}`, `# TYPE ${name} gauge`, `${name} ${v}`];
      const counter = (name: string, help: string, v: number): string[] => [
        `# HELP ${name} ${help}`,
        `# TYPE ${name} counter`,
        `${name} ${v}`,
      ];
      out.push(
        ...gauge('dsv2_num_requests_running', 'Sequences in the running batch.', stats.running),
        ...gauge('dsv2_num_requests_waiting', 'Sequences waiting for admission.', stats.waiting),
        ...gauge('dsv2_kv_cache_blocks_used', `KV-cache blocks in use (${stats.blockSize} tokens each).`, stats.blocksUsed),
        ...gauge('dsv2_kv_cache_blocks_free', 'KV-cache blocks free.', stats.blocksFree),
        ...gauge(
          'dsv2_kv_cache_usage_ratio',
          'Fraction of KV-cache blocks in use.',
          stats.blocksUsed / Math.max(1, stats.blocksUsed + stats.blocksFree),
        ),
        ...counter('dsv2_prefix_cache_hit_tokens_total', 'Prompt tokens served from the prefix cache.', stats.prefixHitTokens),
        ...counter('dsv2_prefix_cache_query_tokens_total', 'Prompt tokens looked up in the prefix cache.', stats.prefixQueryTokens),
        ...counter('dsv2_preemptions_total', 'Sequences preempted (blocks freed, recomputed later).', stats.preemptions),
        ...counter('dsv2_engine_steps_total', 'Engine steps run.', stats.steps),
        ...counter('dsv2_engine_plan_steps_total', 'Engine steps run through the op-free decode plan.', stats.planSteps),
      );
    }
    out.push(
      ...this.ttft.lines('dsv2_time_to_first_token_seconds', 'Time from request arrival to its first token.'),
      ...this.itl.lines('dsv2_inter_token_latency_seconds', 'Time between consecutive tokens of a sequence.'),
    );
    return out.join('\n') + '\n';
  }
}
