// A Web Worker that runs the wasm kernels' share of threaded calls (src/backend/wasm/pool.ts).
import { serveTasks, type WorkerInit } from './pool.js';

(globalThis as unknown as { onmessage: (e: { data: WorkerInit }) => void }).onmessage = (e) => serveTasks(e.data);
