// The page's puppet when the generator runs on a `livepuppet serve` machine (?server=): the keypoint models
// on this thread (a few ms a frame), the generator there (remote.js). The same calls as worker_client.js's
// WorkerPuppet, so the page drives either alike.
import {describeRuntime, Puppet, startRuntime, toImageData, toModelPixels} from './puppet.js';

export class ServerPuppet {
  /** ``makeRemote(manifest)``: the RemoteGenerator for the page's model. */
  static async start({backend, threads, makeRemote}) {
    const runtime = await startRuntime({backend, threads, wasmDir: new URL('vendor/wasm/', document.baseURI).href});
    const puppet = await Puppet.load(new URL('model/', document.baseURI), runtime, makeRemote);
    return new ServerPuppet(puppet, runtime);
  }

  constructor(puppet, runtime) {
    Object.assign(this, {puppet, runtime, placement: puppet.placement, remote: puppet.remote,
      width: puppet.width, height: puppet.height, busy: false});
    this.description = `${describeRuntime(runtime, puppet.placement)}; generator on the ${puppet.remote.describe()}`;
    this.image = new ImageData(puppet.width, puppet.height);
  }

  get timings() {
    return this.puppet.timings;
  }

  async setSource(rgba) {
    await this.puppet.setSource(toModelPixels(rgba), rgba);
    this.puppet.recalibrate();
  }

  recalibrate() {
    this.puppet.recalibrate();
  }

  /** One frame, RGBA bytes -> {rgba} (drawn here), {bitmap} (the server's), or {} (the server is away). */
  async animate(rgba) {
    this.busy = true;
    try {
      const calibrated = this.puppet.initial === null;
      const out = await this.puppet.animate(toModelPixels(rgba));
      if (out instanceof Float32Array) return {rgba: toImageData(out, this.image).data, calibrated};
      if (out instanceof ImageData) return {rgba: out.data, calibrated};
      return out ? {bitmap: out, calibrated} : {calibrated};
    } finally {
      this.busy = false;
    }
  }
}
