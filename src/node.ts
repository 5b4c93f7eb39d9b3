// The Node entry of deepseek-v2-ts (`deepseek-v2-ts/node`, and what Node resolves `deepseek-v2-ts` to): the
// browser-safe API of src/index.ts plus what needs Node: the native backend, wasm kernels read from disk with
// worker_threads, model directories and GGUF files on disk, the built-in corpora, the trainer with its checkpoints,
// and the experiments.
import './backend/node.js';
export * from './index.js';
export { loadModel, saveModel, readConfig } from './model/load.js';
export { loadCorpus, splitDocs, BUILTIN_CORPORA, type Corpus, type Doc } from './data/corpus.js';
export { BatchStream, tokenizeDocs } from './data/loader.js';
export { mixCorpus, interleaveByDomain, MIX_DOMAINS, MIX_DOMAIN_BYTES, type MixDomain } from './data/mix.js';
export { routeDomains, domainsOf, type RouteOptions } from './experts/route.js';
export {
  train,
  evaluate,
  TRAIN_DEFAULTS,
  TrainingDiverged,
  type TrainOptions,
  type StepMetrics,
  type TrainResult,
} from './train/trainer.js';
export {
  runExperiment,
  experiment,
  summarise,
  SCALES,
  EXPERIMENT_NAMES,
  type ExperimentName,
  type Experiment,
  type RunResult,
  type Scale,
} from './train/experiments.js';
