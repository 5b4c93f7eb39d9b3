// Which expert does what: counts of routed assignments by (MoE layer, expert, domain) and the numbers that
// describe them. Pure arithmetic on counts, so the tests can give a hand-built routing and check every number.
//
// Per layer, with p(e, d) the share of all assignments that go to expert e from tokens of domain d:
//   I(E; D) = Σ p(e,d) ln p(e,d) / (p(e) p(d))       mutual information between expert choice and domain (nats)
//   I / H(D)                                          the share of the domain's uncertainty an assignment removes:
//                                                     0 when the choice says nothing of the domain, 1 when it determines
//                                                     it, whatever the numbers of experts, K and domains (the headline)
//   NMI     = 2 I / (H(E) + H(D))                     the symmetric normalisation; it is 1 only when expert and domain
//                                                     determine each other, so with more experts than domains or K > 1
//                                                     even a perfect split stays below 1 (E 32, K 4, D 4: ≤ 0.57)
// Per expert: p(e | d) is the share of domain d's assignments that expert e takes. Its domain profile
// q(d | e) = p(e | d) / Σ_d' p(e | d') weighs every domain alike (unequal domain sizes do not decide it); the dominant
// domain is argmax q, and the concentration is max q (1/D: no preference; 1: that domain only).

export interface TokenRouting {
  /** Domain index of every token. */
  domain: Int32Array;
  /** Token id of every token. */
  token: Int32Array;
  /** Per MoE layer: the chosen experts, [tokens · K] row-major. */
  chosen: Int32Array[];
  /** Per MoE layer: L2 norms of the shared experts' and the routed experts' outputs per token (optional). */
  parts?: { shared: Float32Array; routed: Float32Array }[];
  /** The model's layer index of each entry of `chosen` (default 0, 1, …). */
  layerIds?: number[];
  /** Next-token cross-entropy of every token (NaN where there is no target). */
  loss?: Float32Array;
}

export interface ExpertProfile {
  expert: number;
  /** Share of all the layer's assignments. */
  load: number;
  /** p(d | e): the share of this expert's assignments from each domain (compare with the domains' shares). */
  domainShare: number[];
  /** p(d | e) / p(d): > 1 where the expert takes more of a domain than the domain's share of all tokens. */
  lift: number[];
  /** p(e | d): the share of each domain's assignments this expert takes. */
  shareOfDomain: number[];
  /** The domain it prefers (null for an expert no token chose). */
  dominant: number | null;
  concentration: number;
  /** The tokens it takes most: id, count, and the share of that token's occurrences routed to this expert. */
  topTokens: { id: number; count: number; share: number }[];
  /** The tokens it takes the largest share of (among tokens seen at least `minCount` times): what sets it apart
   * (a uniform router takes K/E of every token). */
  distinctive: { id: number; count: number; share: number }[];
}

export interface LayerSpecialisation {
  layer: number;
  mutualInformation: number;
  nmi: number;
  /** I(E; D) / H(D). */
  domainInformation: number;
  experts: ExpertProfile[];
  /** Per domain, the mean over its tokens of |shared| / (|shared| + |routed|); null without part norms. */
  sharedCarry: number[] | null;
}

export interface SpecialisationReport {
  domains: string[];
  /** Tokens of each domain. */
  domainTokens: number[];
  /** Each domain's share of all tokens. */
  domainShare: number[];
  /** Mean next-token cross-entropy over each domain's tokens (null without losses). */
  domainLoss: (number | null)[] | null;
  topK: number;
  experts: number;
  layers: LayerSpecialisation[];
}

const xlogx = (p: number): number => (p > 0 ? p * Math.log(p) : 0);

/** Mutual information, its normalisations, from a joint count table [rows][cols]. */
export function mutualInformation(joint: number[][]): { mi: number; nmi: number; hRows: number; hCols: number } {
  const total = joint.reduce((s, r) => s + r.reduce((a, b) => a + b, 0), 0);
  if (!total) return { mi: 0, nmi: 0, hRows: 0, hCols: 0 };
  const rows = joint.map((r) => r.reduce((a, b) => a + b, 0) / total);
  const cols = joint[0]!.map((_, j) => joint.reduce((s, r) => s + r[j]!, 0) / total);
  let mi = 0;
  joint.forEach((r, i) =>
    r.forEach((c, j) => {
      if (c > 0) {
        const p = c / total;
        mi += p * Math.log(p / (rows[i]! * cols[j]!));
      }
    }),
  );
  const hRows = -rows.reduce((s, p) => s + xlogx(p), 0);
  const hCols = -cols.reduce((s, p) => s + xlogx(p), 0);
  mi = Math.max(0, mi); // rounding can leave −1e-17
  return { mi, nmi: hRows + hCols > 0 ? (2 * mi) / (hRows + hCols) : 0, hRows, hCols };
}

/** The report of a routing; `topTokens` tokens per expert (default 10). */
export function specialisation(r: TokenRouting, domains: string[], experts: number, topK: number, topTokens = 10): SpecialisationReport {
  const D = domains.length;
  const N = r.domain.length;
  if (r.token.length !== N) throw new Error(`routing: ${N} domain labels but ${r.token.length} token ids`);
  const domainTokens = new Array<number>(D).fill(0);
  for (const d of r.domain) {
    if (!(d >= 0 && d < D)) throw new Error(`routing: domain index ${d} is outside 0…${D - 1}`);
    domainTokens[d]!++;
  }
  const domainShare = domainTokens.map((n) => (N ? n / N : 0));
  const tokenTotals = new Map<number, number>();
  for (const t of r.token) tokenTotals.set(t, (tokenTotals.get(t) ?? 0) + 1);
  // a token's share is telling once it has occurred a few times: ≥ 1 in 2,000 tokens, and at least 5 times
  const minCount = Math.max(5, Math.ceil(N / 2000));

  const layers = r.chosen.map((chosen, li): LayerSpecialisation => {
    if (chosen.length !== N * topK) throw new Error(`routing: layer ${li} has ${chosen.length} choices for ${N} tokens × ${topK}`);
    const joint = Array.from({ length: experts }, () => new Array<number>(D).fill(0));
    const byToken = Array.from({ length: experts }, () => new Map<number, number>());
    for (let i = 0; i < N; i++) {
      const d = r.domain[i]!;
      for (let k = 0; k < topK; k++) {
        const e = chosen[i * topK + k]!;
        if (!(e >= 0 && e < experts)) throw new Error(`routing: layer ${li} names expert ${e}, outside 0…${experts - 1}`);
        joint[e]![d]!++;
        const m = byToken[e]!;
        m.set(r.token[i]!, (m.get(r.token[i]!) ?? 0) + 1);
      }
    }
    const { mi, nmi, hCols } = mutualInformation(joint);
    const total = N * topK;
    const profiles = joint.map((row, e): ExpertProfile => {
      const n = row.reduce((a, b) => a + b, 0);
      const domainShareE = row.map((c) => (n ? c / n : 0));
      const shareOfDomain = row.map((c, d) => (domainTokens[d] ? c / (domainTokens[d]! * topK) : 0));
      const s = shareOfDomain.reduce((a, b) => a + b, 0);
      const q = shareOfDomain.map((v) => (s ? v / s : 0));
      const dominant = s ? q.reduce((best, v, d) => (v > q[best]! ? d : best), 0) : null;
      const entries = [...byToken[e]!.entries()].map(([id, count]) => ({ id, count, share: count / tokenTotals.get(id)! }));
      const top = [...entries].sort((a, b) => b.count - a.count || a.id - b.id).slice(0, topTokens);
      const distinctive = entries
        .filter((t) => tokenTotals.get(t.id)! >= minCount)
        .sort((a, b) => b.share - a.share || b.count - a.count || a.id - b.id)
        .slice(0, topTokens);
      return {
        expert: e,
        load: total ? n / total : 0,
        domainShare: domainShareE,
        lift: domainShareE.map((p, d) => (domainShare[d]! > 0 ? p / domainShare[d]! : 0)),
        shareOfDomain,
        dominant,
        concentration: dominant === null ? 0 : q[dominant]!,
        topTokens: top,
        distinctive,
      };
    });
    let sharedCarry: number[] | null = null;
    const parts = r.parts?.[li];
    if (parts) {
      const sums = new Array<number>(D).fill(0);
      for (let i = 0; i < N; i++) {
        const a = parts.shared[i]!;
        const b = parts.routed[i]!;
        sums[r.domain[i]!]! += a + b > 0 ? a / (a + b) : 0;
      }
      sharedCarry = sums.map((v, d) => (domainTokens[d] ? v / domainTokens[d]! : 0));
    }
    return {
      layer: r.layerIds?.[li] ?? li,
      mutualInformation: mi,
      nmi,
      domainInformation: hCols > 0 ? mi / hCols : 0,
      experts: profiles,
      sharedCarry,
    };
  });
  let domainLoss: (number | null)[] | null = null;
  if (r.loss) {
    const sum = new Array<number>(D).fill(0);
    const n = new Array<number>(D).fill(0);
    r.loss.forEach((v, i) => {
      if (Number.isFinite(v)) {
        sum[r.domain[i]!]! += v;
        n[r.domain[i]!]!++;
      }
    });
    domainLoss = sum.map((s, d) => (n[d] ? s / n[d]! : null));
  }
  return { domains, domainTokens, domainShare, domainLoss, topK, experts, layers };
}
