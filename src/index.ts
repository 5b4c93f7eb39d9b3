// Public API of deepseek-v2-ts: the browser-safe entry. Nothing here imports a `node:` module (a test bundles it for
// the browser and checks); what needs the file system, the native addon or worker_threads is added by the Node
// entry, src/node.ts (`deepseek-v2-ts/node`, and what Node gets for `deepseek-v2-ts`).
export type { Backend, BinaryOp, UnaryOp, GemmParams, AttentionParams, AdamWParams } from './backend/backend.js';
export {
  availableBackends,
  defaultBackend,
  loadBackend,
  initBackend,
  useBackend,
  registerBackend,
  backendUnavailableReason,
  BACKEND_NAMES,
  type BackendName,
  type BackendLoader,
} from './backend/registry.js';
export { configureWasm, type WasmConfig } from './backend/wasm/browser.js';
export { createWasmBackend, detectVariant, wasmFileName, type WasmVariant, type WasmBackendOptions } from './backend/wasm/index.js';
export { Tensor, tensor, intTensor, scalar, zeros, ones, full, arange, randn, rand, type CreateOptions } from './tensor/tensor.js';
export { Rng, type RngState } from './tensor/random.js';
export { BufferArena, withArena } from './tensor/arena.js';
export { bf16ToF32, f32ToBf16, f16ToF32, f32ToF16, type DType } from './tensor/dtype.js';
export { noGrad, isGradEnabled, record } from './autograd/graph.js';
export { gradcheck, type GradcheckOptions, type GradcheckResult } from './autograd/gradcheck.js';
export * from './autograd/ops/index.js';
export { SGD, AdamW, zeroGrad, globalGradNorm, type AdamWOptions } from './optim/optimizer.js';
export { DeepseekV2ForCausalLM, type ForwardOptions, type ForwardOutput } from './model/model.js';
export { parseConfig, configToJson, type DeepseekV2Config } from './model/config.js';
export { preset, PRESET_NAMES } from './model/presets.js';
export type { RouterOutput, TokenDropping } from './model/moe.js';
export { generate, generateGreedy, generateWithoutCache, type GenerateOptions } from './infer/generate.js';
export { Engine, EngineError, type EngineOptions, type EngineStats, type TokenEvent, type RoutedExperts } from './infer/engine.js';
export { LocalEngine, type EngineClient, type EventStream, type GenerateRequest } from './infer/runner.js';
export { samplingParams, SamplingError, SequenceSampler, type SamplingParams, type TokenLogprob } from './infer/sampler.js';
export { BlockManager } from './infer/block-manager.js';
export { Tokenizer, type TokenizerJson } from './tokenizer/tokenizer.js';
export { trainBpe, type BpeTrainOptions } from './tokenizer/train.js';
export { makeSchedule, lrAt, type Schedule } from './train/schedule.js';
export { balanceLosses, type BalanceCoefficients } from './train/losses.js';
export { objective } from './train/objective.js';
export { mathProblems, MATH_KINDS, type MathKind, type MathProblem } from './data/math.js';
export {
  specialisation,
  mutualInformation,
  type TokenRouting,
  type SpecialisationReport,
  type LayerSpecialisation,
  type ExpertProfile,
} from './experts/stats.js';

export {
  loadModelFromFiles,
  modelFilesFrom,
  fetchModelFiles,
  modelToFiles,
  type ModelFiles,
  type LoadedModel,
  type FromFilesOptions,
} from './model/from-files.js';
export { modelFromTensors, checkInventory, type TensorStore } from './model/from-tensors.js';
export { SafetensorsReader, encodeSafetensors, safetensorsChunks, CheckpointError } from './io/safetensors-format.js';
export { GgufReader, GgufError } from './io/gguf-format.js';
export { memorySource, type ByteSource } from './io/bytes.js';
