// A Node worker thread that runs the wasm kernels' share of threaded calls (src/backend/wasm/pool.ts).
import { parentPort } from 'node:worker_threads';
import { serveTasks, type WorkerInit } from './pool.js';

parentPort!.once('message', (init: WorkerInit) => serveTasks(init));
