// The page: camera -> framing -> the four models (puppet.js) -> the avatar canvas, with fps,
// per-stage ms, calibration and portrait pick/drop. Query parameters:
//   portrait=URL    load this portrait at start (for OBS, where no file can be picked)
//   view=avatar     the avatar alone, full window (OBS Browser Source)
//   backend=auto|webgpu|wasm  auto: WebGPU on a hardware GPU adapter, else WebAssembly; webgpu also
//                   takes a software adapter (SwiftShader); wasm: never WebGPU
//   threads=N|auto  WebAssembly threads (auto: all cores when the page is cross-origin isolated)
//   test            no camera; window.livepuppetTest feeds frames and reads the canvas back
// The models run in a Web Worker (worker.js, through remote.js): this thread only moves pixels,
// draws and answers keys, so a key is answered while a frame renders (its answer time is measured
// here: document.body.dataset.keys).
import {Framer} from './framing.js';
import {RemotePuppet} from './remote.js';

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const nextFrame = () => new Promise((resolve) => requestAnimationFrame(resolve));
// A turn of the event loop (keys, clicks, painting) without waiting for the next display frame: a plain
// task, queued behind the others (scheduler.yield's continuation would go ahead of them and starve them).
const yieldTask = () => new Promise((resolve) => setTimeout(resolve));

function showMessage(text) {
  $('message').textContent = text;
  $('message').hidden = !text;
}

function canvas2d(canvas, w, h) {
  canvas.width = w;
  canvas.height = h;
  return canvas.getContext('2d', {willReadFrequently: true});
}

/** What the user can do from the keyboard: one table, as in livepuppet's live loop. */
const KEYS = {
  c: (app) => app.calibrate(),
  '+': (app) => app.framer.zoomBy(1.1), '=': (app) => app.framer.zoomBy(1.1), '-': (app) => app.framer.zoomBy(1 / 1.1),
  ArrowLeft: (app) => app.framer.panBy(-1, 0), ArrowRight: (app) => app.framer.panBy(1, 0),
  ArrowUp: (app) => app.framer.panBy(0, -1), ArrowDown: (app) => app.framer.panBy(0, 1),
  0: (app) => app.framer.resetView(), f: (app) => app.framer.toggleTracking(),
};

/** How long keys took to be answered (from the key event to its action done), in ms: all of them, and
 * those pressed while a frame was in the worker. */
class KeyTimes {
  constructor() {
    Object.assign(this, {count: 0, max: 0, during: 0, maxDuring: 0});
  }

  note(ms, duringFrame) {
    this.count += 1;
    this.max = Math.max(this.max, ms);
    if (duringFrame) {
      this.during += 1;
      this.maxDuring = Math.max(this.maxDuring, ms);
    }
    document.body.dataset.keys = JSON.stringify(this);
  }
}

class App {
  constructor(puppet) {
    this.puppet = puppet;
    this.keyTimes = new KeyTimes();
    this.framer = new Framer();
    const {width: w, height: h} = puppet;
    this.avatar = canvas2d($('avatar'), w, h);
    this.image = this.avatar.createImageData(w, h);
    this.crop = canvas2d(document.createElement('canvas'), w, h);
    this.frames = 0;
    this.calibrations = 0;
    this.fps = 0;
    this.last = 0;
    this.totals = {}; // ms per stage summed over all frames (benchmarks/web_fps.py averages them)
    const runtime = puppet.runtime;
    $('backend').textContent = puppet.description;
    $('backend').title = runtime.gpuWhy ? `not on WebGPU: ${runtime.gpuWhy}` : '';
    Object.assign(document.body.dataset, {backend: runtime.accelerator, threads: runtime.threads,
      placement: JSON.stringify(puppet.placement)});
  }

  bind() {
    $('calibrate').addEventListener('click', () => this.calibrate());
    document.addEventListener('keydown', (e) => {
      const action = KEYS[e.key];
      if (action && !e.ctrlKey && !e.metaKey && !e.altKey) {
        const duringFrame = this.puppet.busy;
        action(this);
        e.preventDefault();
        this.keyTimes.note(performance.now() - e.timeStamp, duringFrame);
      }
    });
    $('portrait').addEventListener('change', (e) => e.target.files[0] && this.loadPortrait(e.target.files[0]));
    const drop = document.body;
    drop.addEventListener('dragover', (e) => { e.preventDefault(); $('drop').classList.add('over'); });
    drop.addEventListener('dragleave', () => $('drop').classList.remove('over'));
    drop.addEventListener('drop', (e) => {
      e.preventDefault();
      $('drop').classList.remove('over');
      const file = e.dataTransfer.files[0];
      if (file) this.loadPortrait(file);
    });
  }

  calibrate() {
    this.puppet.recalibrate();
    $('calibrated').textContent = 'on the next frame';
  }

  /** A picked, dropped or fetched portrait, stretched to the model's size (nothing cut away). */
  async loadPortrait(blob, name = blob.name || 'the portrait') {
    let bitmap;
    try {
      bitmap = await createImageBitmap(blob);
    } catch {
      showMessage(`${name} is not an image this browser can read; pick a PNG or JPEG portrait`);
      return false;
    }
    const {width: w, height: h} = this.puppet;
    this.crop.imageSmoothingQuality = 'high';
    this.crop.drawImage(bitmap, 0, 0, w, h);
    bitmap.close();
    await this.setSource(this.crop.getImageData(0, 0, w, h).data);
    return true;
  }

  async setSource(rgba) {
    await this.puppet.setSource(rgba);
    showMessage('');
    document.body.dataset.source = 'ready';
  }

  /** Animate one model-size RGBA frame onto the avatar canvas; counts frames and calibrations. */
  async drive(rgba) {
    const {rgba: out, calibrated} = await this.puppet.animate(rgba);
    this.image.data.set(out);
    this.avatar.putImageData(this.image, 0, 0);
    this.frames += 1;
    if (calibrated) {
      this.calibrations += 1;
      $('calibrated').textContent = `at frame ${this.frames}`;
    }
    document.body.dataset.frames = this.frames;
    document.body.dataset.calibrations = this.calibrations;
    this.showStats();
  }

  /** fps, and each stage's ms: the three models' runs, 'copies' (their tensors in and out), 'page' (the rest). */
  showStats() {
    const now = performance.now();
    const {keypoints = 0, process = 0, generate = 0, copies = 0} = this.puppet.timings;
    if (this.last) {
      const ms = now - this.last;
      this.fps = this.fps ? 0.9 * this.fps + 0.1 * (1000 / ms) : 1000 / ms;
      this.puppet.timings.page = Math.max(0, ms - keypoints - process - generate - copies);
    }
    this.last = now;
    for (const [k, v] of Object.entries(this.puppet.timings)) this.totals[k] = (this.totals[k] || 0) + v;
    $('fps').textContent = this.fps.toFixed(1);
    Object.assign(document.body.dataset, {fps: this.fps.toFixed(2), totals: JSON.stringify(this.totals)});
    $('stages').textContent = Object.entries(this.puppet.timings).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(' · ');
  }

  /** The live loop: the newest camera frame's crop through the models, again and again. */
  async run(video) {
    const preview = canvas2d($('camera'), 320, 240);
    const {width: w, height: h} = this.puppet;
    // After a frame that took longer than a display frame, the next goes on at once (a newer camera
    // frame is waiting), after one turn of the event loop; otherwise it waits for the display.
    let slow = false;
    for (;;) {
      await (slow ? yieldTask() : nextFrame());
      slow = false;
      if (video.readyState < 2 || !video.videoWidth) continue;
      const start = performance.now();
      const box = this.framer.box(video, video.videoWidth, video.videoHeight);
      this.crop.drawImage(video, box.x, box.y, box.side, box.side, 0, 0, w, h);
      const k = 320 / video.videoWidth;
      preview.drawImage(video, 0, 0, 320, video.videoHeight * k);
      preview.strokeStyle = '#8cf';
      preview.strokeRect(box.x * k, box.y * k, box.side * k, box.side * k);
      $('framing').textContent = this.framer.trackingText;
      if (this.puppet.source) await this.drive(this.crop.getImageData(0, 0, w, h).data);
      slow = performance.now() - start > 20;
    }
  }
}

async function openCamera() {
  const video = document.createElement('video');
  video.muted = true;
  video.playsInline = true;
  try {
    video.srcObject = await navigator.mediaDevices.getUserMedia({video: {width: 640, height: 480}, audio: false});
  } catch (e) {
    const why = {NotAllowedError: 'camera access was refused: allow it for this page and reload',
      NotFoundError: 'no camera found: plug one in and reload',
      NotReadableError: 'the camera is busy in another program: close it and reload'}[e.name];
    showMessage(why || `cannot open the camera (${e.message})`);
    return null;
  }
  await video.play();
  return video;
}

const b64ToBytes = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
const bytesToB64 = (bytes) => btoa(Array.from(bytes, (b) => String.fromCharCode(b)).join(''));
const rgbToRgba = (rgb) => {
  const out = new Uint8ClampedArray((rgb.length / 3) * 4).fill(255);
  for (let i = 0, j = 0; j < rgb.length; i += 4, j += 3) out.set(rgb.subarray(j, j + 3), i);
  return out;
};

/** ?test: frames in and the avatar canvas out as base64 RGB bytes at the model's size, no camera. */
function testHook(app) {
  const {width: w, height: h} = app.puppet;
  return {
    size: [h, w],
    setSource: (b64) => app.setSource(rgbToRgba(b64ToBytes(b64))),
    async drive(b64) {
      await app.drive(rgbToRgba(b64ToBytes(b64)));
      const rgba = app.avatar.getImageData(0, 0, w, h).data;
      return bytesToB64(rgba.filter((_, i) => i % 4 !== 3));
    },
  };
}

async function main() {
  if (params.get('view') === 'avatar') document.body.classList.add('avatar-only');
  let app;
  try {
    const puppet = await RemotePuppet.start({backend: params.get('backend') || 'auto',
      threads: params.get('threads') || 'auto'});
    app = new App(puppet);
  } catch (e) {
    showMessage(`the models could not start in this browser: ${e.message}`);
    $('backend').textContent = 'none';
    document.body.dataset.state = 'failed';
    return;
  }
  app.bind();
  if (params.has('test')) {
    window.livepuppetTest = testHook(app);
    document.body.dataset.state = 'ready';
    return;
  }
  if (!params.get('portrait')) showMessage('pick or drop a portrait to animate');
  else {
    const response = await fetch(params.get('portrait')).catch(() => null);
    if (!response?.ok) showMessage(`cannot fetch the portrait ${params.get('portrait')}`);
    else await app.loadPortrait(await response.blob(), params.get('portrait'));
  }
  const video = await openCamera();
  document.body.dataset.state = 'ready';
  if (video) {
    await app.run(video).catch((e) => {  // a lost GPU device, an exhausted heap: said, not a dead page
      showMessage(`the models stopped: ${e.message}; reload the page (?backend=wasm if it happens again)`);
      document.body.dataset.state = 'failed';
    });
  }
}

main();
