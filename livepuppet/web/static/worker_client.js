// The main thread's handle on the models, which run in worker.js: the same calls as puppet.js's Puppet
// (setSource, animate, recalibrate), each a message, answered when the worker is done. ``busy`` is true
// while a frame is in the worker: the page measures its keys' answer time against it.

export class WorkerPuppet {
  constructor(worker) {
    this.worker = worker;
    this.pending = new Map();
    this.next = 0;
    this.busy = false;
    this.source = false; // a portrait was set
    this.calibrating = true; // the next frame is the calibration frame
    this.timings = {};
    worker.onmessage = ({data}) => {
      const call = this.pending.get(data.id);
      this.pending.delete(data.id);
      if (data.error === undefined) call.resolve(data);
      else call.reject(new Error(data.error));
    };
    // A worker that cannot start (its script fails) or dies: every call in flight fails with it.
    worker.onerror = (event) => {
      event.preventDefault();
      this._failAll(new Error(event.message || 'the models\' worker failed'));
    };
  }

  /** Start the worker's runtime and models; resolves to the remote puppet once they are compiled. */
  static async start({backend, threads}) {
    const remote = new WorkerPuppet(new Worker(new URL('worker.js', document.baseURI)));
    const started = await remote._call({type: 'start', backend, threads,
      wasmDir: new URL('vendor/wasm/', document.baseURI).href, modelBase: new URL('model/', document.baseURI).href});
    Object.assign(remote, {runtime: started.runtime, placement: started.placement,
      description: started.description, height: started.size[0], width: started.size[1]});
    return remote;
  }

  _call(message, transfer = []) {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, {resolve, reject});
      this.worker.postMessage({id, ...message}, transfer);
    });
  }

  _failAll(error) {
    for (const call of this.pending.values()) call.reject(error);
    this.pending.clear();
  }

  /** A portrait, RGBA bytes at the model's size; the next frame calibrates. */
  async setSource(rgba) {
    const copy = new Uint8ClampedArray(rgba);
    await this._call({type: 'source', rgba: copy}, [copy.buffer]);
    this.source = true;
    this.calibrating = true;
  }

  recalibrate() {
    this.calibrating = true;
  }

  /** One driving frame, RGBA bytes -> the avatar, RGBA bytes (an ImageData's data), and whether it calibrated. */
  async animate(rgba) {
    const copy = new Uint8ClampedArray(rgba);
    const recalibrate = this.calibrating;
    this.calibrating = false;
    this.busy = true;
    try {
      const out = await this._call({type: 'frame', rgba: copy, recalibrate}, [copy.buffer]);
      this.timings = out.timings;
      return {rgba: out.rgba, calibrated: out.calibrated};
    } finally {
      this.busy = false;
    }
  }
}
