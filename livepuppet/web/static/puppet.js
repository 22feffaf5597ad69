// The four livepuppet models on LiteRT.js: the browser twin of livepuppet/runtime/pipeline.py.
// Keypoints of each frame, keypoint processing (in-graph), source encoding once, generator;
// on WebGPU where the browser has a GPU adapter, else on WebAssembly (XNNPACK). It runs in the
// page's Web Worker (worker.js), so a frame never holds up the page's keys and drawing.
import {loadAndCompile, loadLiteRt, supportsFeature, Tensor} from './vendor/litertjs-core.js';

const MODELS = ['kp_detector', 'source_encoder', 'kp_processing', 'generator'];
const REMOTE_MODELS = ['kp_detector', 'kp_processing']; // what the page runs when a server generates
// Adapters that draw on the CPU: WebGPU through them is slower than WebAssembly with XNNPACK.
const SOFTWARE_GPU = /swiftshader|llvmpipe|lavapipe|software|basic render/i;

/** The WebGPU adapter the page could run on ({name, software}), or why there is none ({why}).
 * LiteRT.js runs on WebGPU only what WebGPU supports and the rest of a graph on WebAssembly, and
 * reading GPU results back from there needs its JSPI build: no JSPI, no WebGPU. */
async function findGpu() {
  if (!self.isSecureContext || !navigator.gpu) return {why: 'this browser has no WebGPU'};
  if (!(await supportsFeature('jspi'))) return {why: 'this browser lacks WebAssembly JSPI, which WebGPU needs here'};
  const adapter = await navigator.gpu.requestAdapter({powerPreference: 'high-performance'}).catch(() => null);
  if (!adapter) return {why: 'no WebGPU adapter'};
  const info = adapter.info || {};
  const name = [info.vendor, info.architecture || info.description].filter(Boolean).join(' ') || 'unnamed adapter';
  return {name, software: Boolean(info.isFallbackAdapter) || SOFTWARE_GPU.test(`${info.architecture} ${info.description}`)};
}

/** ?backend= -> whether to run on the adapter found: auto takes a hardware GPU only. */
const TAKES_GPU = {auto: (gpu) => Boolean(gpu.name) && !gpu.software, webgpu: (gpu) => Boolean(gpu.name), wasm: () => false};

/** Why the page is not on WebGPU, in a few words for the status line ('' when it is). */
function whyNotGpu(backend, gpu) {
  if (backend === 'wasm') return '';
  if (gpu.software) return `only a software WebGPU adapter (${gpu.name}), slower: ?backend=webgpu takes it`;
  return gpu.why;
}

// What LiteRT.js says when it splits a graph between WebGPU and WebAssembly (its own op count).
const SPLIT = /(\d+) operations will run on the GPU, and the remaining (\d+) operations will run on the CPU/;
const runtimeLog = [];

/** The runtime's Emscripten module settings. Its log lines (delegate set-up, which ops WebGPU cannot
 * take) go to stderr, which the browser shows as console errors: they go to the console's verbose level
 * and to ``runtimeLog``; failures arrive as exceptions. In a worker the runtime's script is loaded with
 * importScripts, so it cannot find its own URL: its files, and its threads' script, are named here. */
function moduleSettings(wasmDir, script) {
  return {
    print: () => {},
    printErr: (line) => { runtimeLog.push(line); console.debug('LiteRT:', line); },
    locateFile: (path) => new URL(path, wasmDir).href,
    mainScriptUrlOrBlob: new URL(script, wasmDir).href,
  };
}

/** Load the runtime: WebGPU (JSPI build, its CPU part on one thread) where ``backend`` takes the adapter,
 * else WebAssembly, threaded where the page is cross-origin isolated (SharedArrayBuffer).
 * ``backend``: auto | webgpu | wasm; ``threads``: auto | N; ``wasmDir``: the runtime's folder (URL). */
export async function startRuntime({backend = 'auto', threads = 'auto', wasmDir} = {}) {
  const takes = TAKES_GPU[backend];
  if (!takes) throw new Error(`unknown back end "${backend}": use auto, webgpu or wasm`);
  const gpu = backend === 'wasm' ? {} : await findGpu();
  if (takes(gpu)) {
    self.Module = moduleSettings(wasmDir, 'litert_wasm_jspi_internal.js');
    await loadLiteRt(wasmDir, {jspi: true});
    return {accelerator: 'webgpu', gpu: gpu.name, software: gpu.software, threads: 1, why: ''};
  }
  const canThread = self.crossOriginIsolated && (await supportsFeature('relaxedSimd'))
    && (await supportsFeature('threads'));
  const count = threads === 'auto' ? navigator.hardwareConcurrency || 1 : Number(threads);
  const useThreads = canThread && count > 1;
  self.Module = moduleSettings(wasmDir, useThreads ? 'litert_wasm_threaded_internal.js' : 'litert_wasm_internal.js');
  await loadLiteRt(wasmDir, {threads: useThreads});
  return {
    accelerator: 'wasm',
    threads: useThreads ? count : 1,
    why: useThreads || count <= 1 ? '' : self.crossOriginIsolated ? 'no WebAssembly threads in this browser'
      : 'page not cross-origin isolated',
    gpuWhy: whyNotGpu(backend, gpu),
  };
}

/** The status line's back end: what runs the models and on how many threads. */
export function describeRuntime(runtime, placement = {}) {
  if (runtime.accelerator === 'webgpu') {
    const partial = Object.entries(placement).filter(([, p]) => p.where !== 'webgpu').map(([name]) => name);
    const rest = partial.length ? `; on WebAssembly, 1 thread, in part or whole: ${partial.join(', ')}` : '';
    return `WebGPU (${runtime.gpu})${rest}`;
  }
  const threads = runtime.threads > 1 ? `${runtime.threads} threads` : `1 thread${runtime.why ? ` (${runtime.why})` : ''}`;
  return `WebAssembly, ${threads}`;
}

function inputShape(detail) {
  return Array.from(detail.shape, (d) => (d < 0 ? 1 : d));
}

/** A tensor kept for many runs (the source's), already where ``model`` reads input ``name`` from. */
async function keptTensor(model, name, data) {
  const detail = model.getInputDetails().find((d) => d.name === name);
  const tensor = new Tensor(data, inputShape(detail));
  const wanted = detail.supportedBufferTypes;
  return wanted.has(tensor.getBufferType()) ? tensor : tensor.moveTo(wanted.values().next().value);
}

/** Named float32 arrays -> tensors for ``model`` (freed by the caller), skipping those in ``kept``. */
function makeInputs(model, inputs, kept) {
  const made = {};
  for (const detail of model.getInputDetails()) {
    if (kept[detail.name]) continue;
    const data = inputs[detail.name];
    if (!data) throw new Error(`model input ${detail.name} not given`);
    made[detail.name] = new Tensor(data, inputShape(detail));
  }
  return made;
}

/** Output tensors -> the same on the host: on WebGPU this waits for the GPU to finish (part of the run). */
async function onHost(outputs) {
  const local = {};
  for (const [name, tensor] of Object.entries(outputs)) {
    local[name] = tensor.accelerator === 'wasm' ? tensor : await tensor.moveTo('wasm');
    if (local[name] !== tensor && !tensor.deleted) tensor.delete();
  }
  return local;
}

/** Host tensors -> named float32 arrays: one copy out of the runtime's memory; every tensor is freed. */
function takeOutputs(local) {
  const result = {};
  for (const [name, tensor] of Object.entries(local)) {
    result[name] = tensor.toTypedArray();
    tensor.delete();
  }
  return result;
}

/** Compile one model for ``runtime``; on WebGPU, a model it cannot take at all runs on WebAssembly.
 * Returns [model, placement]: where is 'webgpu', 'webgpu+wasm' (partly delegated) or 'wasm', and a split
 * model has the op counts LiteRT.js logged for it. WebGPU computes in fp32: in fp16 the test model's
 * picture was 4.6 levels off the Python engine's (mean; max 68). */
async function compile(url, runtime) {
  const cpuOptions = {numThreads: runtime.threads};
  if (runtime.accelerator === 'webgpu') {
    const logged = runtimeLog.length;
    try {
      const model = await loadAndCompile(url, {accelerator: 'webgpu', cpuOptions, gpuOptions: {precision: 'fp32'}});
      if (model.isFullyAccelerated) return [model, {where: 'webgpu'}];
      const split = runtimeLog.slice(logged).map((line) => line.match(SPLIT)).find(Boolean);
      return [model, {where: 'webgpu+wasm', ...(split && {gpuOps: Number(split[1]), cpuOps: Number(split[2])})}];
    } catch (e) {
      console.warn(`WebGPU cannot take ${url} (${e.message}); it runs on WebAssembly`);
    }
  }
  return [await loadAndCompile(url, {accelerator: 'wasm', cpuOptions}), {where: 'wasm'}];
}

export class Puppet {
  constructor(models, manifest, placement = {}, remote = null) {
    this.models = models;
    this.placement = placement;
    this.remote = remote; // a RemoteGenerator (remote.js): the generator on a server, the rest here
    [this.height, this.width] = manifest.frame_size;
    this.relative = 1;
    this.adaptScale = 1;
    this.source = null;
    this.kept = null; // the source's tensors for the generator, made once per portrait
    this.initial = null;
    // the last frame's ms: with a server, its round trip (remote) and its own time (server) for generate
    this.timings = remote ? {keypoints: 0, process: 0, copies: 0, remote: 0, server: 0}
      : {keypoints: 0, process: 0, generate: 0, copies: 0};
    this.queue = Promise.resolve();
  }

  /** One model call sequence at a time: a new portrait may arrive while a frame is in flight. */
  _exclusive(work) {
    const result = this.queue.then(work);
    this.queue = result.catch(() => {});
    return result;
  }

  /** Fetch and compile the .tflite files named by model/web.json for ``runtime`` (startRuntime's): all four, or
   * with ``makeRemote`` (manifest -> a RemoteGenerator) the two keypoint models, the generator on a server. On
   * WebGPU the browser graph's files where the folder has them (every op on WebGPU), else the XNNPACK graph's. */
  static async load(base, runtime, makeRemote = null) {
    const manifest = await (await fetch(new URL('web.json', base))).json();
    const remote = makeRemote ? makeRemote(manifest) : null;
    if (remote) await remote.connect();
    const files = runtime.accelerator === 'webgpu' && manifest.webgpu_models ? manifest.webgpu_models : manifest.models;
    const models = {};
    const placement = {};
    for (const name of remote ? REMOTE_MODELS : MODELS) {
      [models[name], placement[name]] = await compile(new URL(files[name], base).href, runtime);
    }
    return new Puppet(models, manifest, placement, remote);
  }

  /** Run ``model`` on named float32 ``inputs`` and ``kept`` tensors; with a ``stage``, its run's ms go to
   * timings[stage] and the tensors' way in and out to timings.copies (summed over the frame). */
  async _run(model, inputs, kept = {}, stage = null) {
    const t0 = performance.now();
    const made = makeInputs(model, inputs, kept);
    let outputs;
    let t1;
    try {
      t1 = performance.now();
      outputs = await onHost(await model.run({...made, ...kept}));
    } finally {
      Object.values(made).forEach((t) => t.delete());
    }
    const t2 = performance.now();
    const result = takeOutputs(outputs);
    if (stage) {
      this.timings[stage] = t2 - t1;
      this.timings.copies += (t1 - t0) + (performance.now() - t2);
    }
    return result;
  }

  /** Source image, float32 RGB (H*W*3) in [0, 1] (and its RGBA bytes, for a server): its keypoints and
   * generator features (here, or the portrait sent to the server), once. */
  setSource(pixels, rgba = null) {
    return this._exclusive(() => this._setSource(pixels, rgba));
  }

  async _setSource(pixels, rgba) {
    const kp = await this._run(this.models.kp_detector, {image: pixels});
    if (this.remote) {
      await this.remote.setSource(rgba);
      this.source = {value: kp.value, jacobian: kp.jacobian};
      return;
    }
    const enc = await this._run(this.models.source_encoder, {source: pixels});
    const gen = this.models.generator;
    const kept = {};
    try {
      for (const [name, data] of Object.entries({source_value: kp.value, source_jacobian: kp.jacobian,
        features: enc.features, source_small: enc.source_small})) kept[name] = await keptTensor(gen, name, data);
    } catch (e) {
      Object.values(kept).forEach((t) => t.delete());
      throw e;
    }
    if (this.kept) Object.values(this.kept).forEach((t) => t.delete());
    this.source = {value: kp.value, jacobian: kp.jacobian};
    this.kept = kept;
  }

  /** The next driving frame becomes the calibration frame. */
  recalibrate() {
    this.initial = null;
  }

  /** One driving frame, float32 RGB in [0, 1] -> the animated portrait, float32 RGB in [0, 1] (from a server: an
   * ImageBitmap or ImageData, or null to keep the last frame). */
  animate(pixels) {
    return this._exclusive(() => this._animate(pixels));
  }

  async _animate(pixels) {
    const src = this.source;
    this.timings.copies = 0;
    const kp = await this._run(this.models.kp_detector, {image: pixels}, {}, 'keypoints');
    if (!this.initial) this.initial = kp;
    const norm = await this._run(this.models.kp_processing, {
      source_value: src.value, source_jacobian: src.jacobian,
      initial_value: this.initial.value, initial_jacobian: this.initial.jacobian,
      driving_value: kp.value, driving_jacobian: kp.jacobian,
      relative: new Float32Array([this.relative]), adapt_scale: new Float32Array([this.adaptScale]),
    }, {}, 'process');
    if (this.remote) { // an ImageBitmap or ImageData, or null while the server is away (the last frame stays)
      const frame = await this.remote.generate(norm.value, norm.jacobian);
      Object.assign(this.timings, this.remote.timings);
      return frame;
    }
    const out = await this._run(this.models.generator, {driving_value: norm.value, driving_jacobian: norm.jacobian},
      this.kept, 'generate');
    return out.prediction;
  }
}

/** RGBA canvas pixels -> float32 RGB in [0, 1] (x / 255, as livepuppet's image reader). */
export function toModelPixels(rgba) {
  const out = new Float32Array((rgba.length / 4) * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    out[j] = rgba[i] / 255;
    out[j + 1] = rgba[i + 1] / 255;
    out[j + 2] = rgba[i + 2] / 255;
  }
  return out;
}

/** Float32 RGB in [0, 1] -> RGBA into ``image`` (ImageData): Uint8ClampedArray rounds half to even and
 * clips, the same float-to-uint8 rule as livepuppet.media.to_uint8. */
export function toImageData(prediction, image) {
  const data = image.data;
  for (let i = 0, j = 0; j < prediction.length; i += 4, j += 3) {
    data[i] = prediction[j] * 255;
    data[i + 1] = prediction[j + 1] * 255;
    data[i + 2] = prediction[j + 2] * 255;
    data[i + 3] = 255;
  }
  return image;
}
