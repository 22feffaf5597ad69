// The four livepuppet models on LiteRT.js: the browser twin of livepuppet/pipeline.py.
// Keypoints of each frame, keypoint processing (in-graph), source encoding once, generator.
import {loadAndCompile, loadLiteRt, supportsFeature, Tensor} from '@litertjs/core';

const MODELS = ['kp_detector', 'source_encoder', 'kp_processing', 'generator'];

/** Load the WebAssembly runtime, threaded where the page is cross-origin isolated (SharedArrayBuffer).
 * WebGPU is not used: LiteRT.js 2.5 delegates only part of these graphs to it (57 of the keypoint
 * processing's 194 ops, for one), and that partitioning needs its JSPI build, which is not shipped. */
export async function startRuntime({threads = 'auto'} = {}) {
  const canThread = self.crossOriginIsolated && (await supportsFeature('relaxedSimd'))
    && (await supportsFeature('threads'));
  const count = threads === 'auto' ? navigator.hardwareConcurrency || 1 : Number(threads);
  const useThreads = canThread && count > 1;
  // The runtime's own INFO/WARNING lines (delegate set-up) go to stderr, which the browser shows as
  // console errors: keep them out of the console; its failures still arrive as exceptions.
  self.Module = {print: () => {}, printErr: (line) => /^(INFO|WARNING)\b/.test(line) || console.warn('LiteRT:', line)};
  await loadLiteRt(new URL('vendor/wasm/', document.baseURI).href, {threads: useThreads});
  return {
    accelerator: 'wasm',
    threads: useThreads ? count : 1,
    why: useThreads || count <= 1 ? '' : self.crossOriginIsolated ? 'no WebAssembly threads in this browser'
      : 'page not cross-origin isolated',
  };
}

/** Named float32 inputs -> named float32 outputs (copied out; every LiteRT tensor is freed). */
async function runModel(model, inputs) {
  const tensors = {};
  for (const detail of model.getInputDetails()) {
    const data = inputs[detail.name];
    if (!data) throw new Error(`model input ${detail.name} not given`);
    const shape = Array.from(detail.shape, (d) => (d < 0 ? 1 : d));
    tensors[detail.name] = new Tensor(data, shape);
  }
  let outputs;
  try {
    outputs = await model.run(tensors);
  } finally {
    Object.values(tensors).forEach((t) => t.delete());
  }
  const result = {};
  for (const [name, tensor] of Object.entries(outputs)) {
    const local = tensor.accelerator === 'wasm' ? tensor : await tensor.moveTo('wasm');
    result[name] = new Float32Array(local.toTypedArray());
    local.delete();
    if (local !== tensor && !tensor.deleted) tensor.delete();
  }
  return result;
}

export class Puppet {
  constructor(models, manifest) {
    this.models = models;
    [this.height, this.width] = manifest.frame_size;
    this.relative = 1;
    this.adaptScale = 1;
    this.source = null;
    this.initial = null;
    this.timings = {};
    this.queue = Promise.resolve();
  }

  /** One model call sequence at a time: a new portrait may arrive while a frame is in flight. */
  _exclusive(work) {
    const result = this.queue.then(work);
    this.queue = result.catch(() => {});
    return result;
  }

  /** Fetch and compile the four .tflite files named by model/web.json. */
  static async load(base, accelerator, threads) {
    const manifest = await (await fetch(new URL('web.json', base))).json();
    const models = {};
    for (const name of MODELS) {
      const url = new URL(manifest.models[name], base).href;
      models[name] = await loadAndCompile(url, {accelerator, cpuOptions: {numThreads: threads}});
    }
    return new Puppet(models, manifest);
  }

  async _timed(stage, work) {
    const start = performance.now();
    const out = await work;
    this.timings[stage] = performance.now() - start;
    return out;
  }

  /** Source image, float32 RGB (H*W*3) in [0, 1]: its keypoints and generator features, once. */
  setSource(pixels) {
    return this._exclusive(() => this._setSource(pixels));
  }

  async _setSource(pixels) {
    const kp = await runModel(this.models.kp_detector, {image: pixels});
    const enc = await runModel(this.models.source_encoder, {source: pixels});
    this.source = {value: kp.value, jacobian: kp.jacobian, features: enc.features, small: enc.source_small};
  }

  /** The next driving frame becomes the calibration frame. */
  recalibrate() {
    this.initial = null;
  }

  /** One driving frame, float32 RGB in [0, 1] -> the animated portrait, float32 RGB in [0, 1]. */
  animate(pixels) {
    return this._exclusive(() => this._animate(pixels));
  }

  async _animate(pixels) {
    const src = this.source;
    const kp = await this._timed('keypoints', runModel(this.models.kp_detector, {image: pixels}));
    if (!this.initial) this.initial = kp;
    const norm = await this._timed('process', runModel(this.models.kp_processing, {
      source_value: src.value, source_jacobian: src.jacobian,
      initial_value: this.initial.value, initial_jacobian: this.initial.jacobian,
      driving_value: kp.value, driving_jacobian: kp.jacobian,
      relative: new Float32Array([this.relative]), adapt_scale: new Float32Array([this.adaptScale]),
    }));
    const out = await this._timed('generate', runModel(this.models.generator, {
      driving_value: norm.value, driving_jacobian: norm.jacobian,
      source_value: src.value, source_jacobian: src.jacobian,
      features: src.features, source_small: src.small,
    }));
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
