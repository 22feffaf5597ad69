// The page's Web Worker: the runtime and the four models (puppet.js) run here, so the page's main
// thread (keys, camera, drawing) stays free while a frame renders. A classic worker, not a module
// one: LiteRT.js loads its Emscripten script with importScripts, which module workers lack; puppet.js
// comes in with a dynamic import. Messages, each answered with {id, ...} or {id, error}:
//   {type: 'start', backend, threads, wasmDir, modelBase} -> {runtime, placement, size, description}
//   {type: 'source', rgba}                                 -> {}
//   {type: 'frame', rgba, recalibrate}                     -> {rgba, timings, calibrated}
// Pixels travel as RGBA bytes at the model's size, their buffers transferred, not copied.
let puppet = null;
let lib = null;

const handlers = {
  async start({backend, threads, wasmDir, modelBase}) {
    lib = await import('./puppet.js');
    const runtime = await lib.startRuntime({backend, threads, wasmDir});
    puppet = await lib.Puppet.load(new URL(modelBase), runtime);
    return {runtime, placement: puppet.placement, size: [puppet.height, puppet.width],
      description: lib.describeRuntime(runtime, puppet.placement)};
  },
  async source({rgba}) {
    await puppet.setSource(lib.toModelPixels(rgba));
    puppet.recalibrate();
    return {};
  },
  async frame({rgba, recalibrate}) {
    if (recalibrate) puppet.recalibrate();
    const calibrated = puppet.initial === null;
    const out = await puppet.animate(lib.toModelPixels(rgba));
    const image = new ImageData(puppet.width, puppet.height);
    lib.toImageData(out, image);
    return {rgba: image.data, timings: {...puppet.timings}, calibrated, transfer: [image.data.buffer]};
  },
};

async function answer(data) {
  try {
    const {transfer = [], ...reply} = await handlers[data.type](data);
    self.postMessage({id: data.id, ...reply}, transfer);
  } catch (e) {
    self.postMessage({id: data.id, error: e?.message || String(e)});
  }
}

// One message at a time, in the order sent: a portrait then a frame is never a frame of the old portrait.
let queue = Promise.resolve();
self.onmessage = ({data}) => { queue = queue.then(() => answer(data)); };
