// safetensors files on disk (Node): one file (SafetensorsFile: the browser-safe reader of ./safetensors-format.ts
// over the open file), a checkpoint of shards named by an index.json, and atomic writes.
import { brief } from './brief.js';
import { existsSync, lstatSync, readFileSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { basename, dirname, join, sep } from 'node:path';
import { writeStreamAtomic } from './atomic.js';
import { fileSource } from './file-source.js';
import {
  CheckpointError,
  checkIndexMetadata,
  SafetensorsReader,
  safetensorsChunks,
  type TensorInfo,
  type TensorToStream,
  type TensorToWrite,
} from './safetensors-format.js';

export * from './safetensors-format.js';

/** One .safetensors file on disk: header parsed and validated at open, data read on demand. */
export class SafetensorsFile extends SafetensorsReader {
  constructor(path: string) {
    if (!existsSync(path)) throw new CheckpointError(`${path}: no such file`);
    // a FIFO would block the open, a device read forever: regular files only
    if (!statSync(path).isFile()) throw new CheckpointError(`${path}: not a regular file`);
    super(path, fileSource(path));
  }
}

/** A set of safetensors files addressed by tensor name: one file, or shards listed by an index.json weight_map. */
export class Checkpoint {
  readonly tensors = new Map<string, TensorInfo>();
  private files = new Map<string, SafetensorsFile>();

  private constructor() {}

  /**
   * Open a file, a `model.safetensors.index.json`, or a directory (which must hold an index.json,
   * `model.safetensors`, or exactly one `*.safetensors` file).
   */
  static open(path: string): Checkpoint {
    if (!existsSync(path)) throw new CheckpointError(`${path}: no such file or directory`);
    const ck = new Checkpoint();
    try {
      return ck.openPath(path);
    } catch (e) {
      ck.close(); // no file descriptor outlives a failed open
      throw e;
    }
  }

  private openPath(path: string): Checkpoint {
    if (path.endsWith('.json')) {
      this.openIndex(path);
      return this;
    }
    if (path.endsWith('.safetensors')) {
      this.add(path);
      return this;
    }
    const index = join(path, 'model.safetensors.index.json');
    if (existsSync(index)) this.openIndex(index);
    else if (existsSync(join(path, 'model.safetensors'))) this.add(join(path, 'model.safetensors'));
    else {
      const all = readdirSync(path).filter((f) => f.endsWith('.safetensors'));
      if (all.length !== 1) {
        throw new CheckpointError(
          `${path}: expected model.safetensors, model.safetensors.index.json or one *.safetensors file (found ${all.length})`,
        );
      }
      this.add(join(path, all[0]!));
    }
    return this;
  }

  private openIndex(indexPath: string): void {
    let idx: { weight_map?: Record<string, string> };
    try {
      idx = JSON.parse(readFileSync(indexPath, 'utf8')) as typeof idx;
    } catch {
      throw new CheckpointError(`${indexPath}: not valid JSON`);
    }
    if (!idx || typeof idx !== 'object' || !idx.weight_map || typeof idx.weight_map !== 'object' || Array.isArray(idx.weight_map))
      throw new CheckpointError(`${indexPath}: no "weight_map" object`);
    checkIndexMetadata(idx, indexPath);
    const dir = dirname(indexPath);
    for (const [name, shard] of Object.entries(idx.weight_map)) {
      // a shard is a plain file name beside the index: no folders, no '..', no absolute paths, no links out
      if (typeof shard !== 'string' || !/^[^/\\\0]{1,255}$/.test(shard) || shard === '.' || shard === '..')
        throw new CheckpointError(`${indexPath}: weight_map puts '${name}' in ${brief(shard)}, which is not a file name in ${dir}`);
    }
    for (const shard of new Set(Object.values(idx.weight_map))) {
      const p = join(dir, shard);
      if (existsSync(p) && lstatSync(p).isSymbolicLink() && !realpathSync(p).startsWith(realpathSync(dir) + sep))
        throw new CheckpointError(`${indexPath}: shard ${shard} is a link out of ${dir}`);
      this.add(p, false);
    }
    for (const [name, shard] of Object.entries(idx.weight_map)) {
      const info = this.files.get(join(dir, shard))!.tensors.get(name);
      if (!info) throw new CheckpointError(`${indexPath}: weight_map puts ${brief(name)} in ${brief(shard)}, which does not hold it`);
      this.tensors.set(name, info);
    }
  }

  private add(file: string, registerAll = true): void {
    const f = new SafetensorsFile(file);
    this.files.set(file, f);
    if (!registerAll) return;
    for (const [name, info] of f.tensors) {
      if (this.tensors.has(name)) throw new CheckpointError(`tensor '${name}' appears in two files (${basename(file)})`);
      this.tensors.set(name, info);
    }
  }

  read(name: string): Float32Array {
    return this.fileOf(name).read(name);
  }

  readRows(name: string, r0: number, r1: number): Float32Array {
    return this.fileOf(name).readRows(name, r0, r1);
  }

  readBytes(name: string): Uint8Array {
    return this.fileOf(name).readBytes(name);
  }

  /** The file that holds a tensor (for memory-mapping it). */
  fileOf(name: string): SafetensorsFile {
    const info = this.tensors.get(name);
    if (!info) throw new CheckpointError(`checkpoint has no tensor '${name}'`);
    return this.files.get(info.file)!;
  }

  close(): void {
    for (const f of this.files.values()) f.close();
  }
}

/** Write tensors (sorted by name, header padded to 8 bytes) atomically, stored as F32, BF16 or F16. */
export function writeSafetensors(
  path: string,
  tensors: readonly TensorToWrite[],
  dtype: 'F32' | 'BF16' | 'F16' = 'F32',
  metadata: Record<string, string> = { format: 'pt' },
): void {
  writeSafetensorsStreaming(
    path,
    tensors.map((t) => ({ name: t.name, shape: t.shape, read: () => t.data })),
    dtype,
    metadata,
  );
}

/**
 * writeSafetensors for models larger than memory: the header is computed from the shapes, then each tensor is read,
 * converted and written in turn, into a temporary file renamed over `path` when complete.
 */
export function writeSafetensorsStreaming(
  path: string,
  tensors: readonly TensorToStream[],
  dtype: 'F32' | 'BF16' | 'F16' = 'F32',
  metadata: Record<string, string> = { format: 'pt' },
): void {
  writeStreamAtomic(path, (put) => {
    for (const chunk of safetensorsChunks(tensors, dtype, metadata)) put(chunk);
  });
}
