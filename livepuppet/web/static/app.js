// The page: camera -> framing -> the four models (puppet.js) -> the avatar canvas, with fps,
// per-stage ms, calibration and portrait pick/drop. Query parameters:
//   portrait=URL    load this portrait at start (for OBS, where no file can be picked)
//   view=avatar     the avatar alone, full window (OBS Browser Source)
//   backend=auto|webgpu|wasm  auto: WebGPU on a hardware GPU adapter, else WebAssembly; webgpu also
//                   takes a software adapter (SwiftShader); wasm: never WebGPU
//   threads=N|auto  WebAssembly threads (auto: all cores when the page is cross-origin isolated)
//   server=ws[s]://host:port  the generator on a `livepuppet serve` machine: only keypoints leave the page
//   token=T, format=jpeg|png|raw, quality=1..100   for that server (its token; how frames come down)
//   test            no camera; window.livepuppetTest feeds frames and reads the canvas back
// Rendering here, the models run in a Web Worker (worker.js, through worker_client.js): this thread only
// moves pixels, draws and answers keys, so a key is answered while a frame renders (its answer time is
// measured here: document.body.dataset.keys).
import {Framer} from './framing.js';
import {RemoteGenerator} from './remote.js';
import {ServerPuppet} from './server_puppet.js';
import {WorkerPuppet} from './worker_client.js';

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

/** What the page's actions do. Which key does which comes from keys.json, the page's part of livepuppet's one
 * key table (livepuppet/live/keys.py), so a key means the same here and in the desktop preview. */
const ACTIONS = {
  calibrate: (app) => app.calibrate(),
  zoom_in: (app) => app.framer.zoomBy(1.1), zoom_out: (app) => app.framer.zoomBy(1 / 1.1),
  pan_left: (app) => app.framer.panBy(-1, 0), pan_right: (app) => app.framer.panBy(1, 0),
  pan_up: (app) => app.framer.panBy(0, -1), pan_down: (app) => app.framer.panBy(0, 1),
  reset_view: (app) => app.framer.resetView(), face_tracking: (app) => app.framer.toggleTracking(),
};
/** How long keys took to be answered (from the key event to its action done), in ms: all of them, and
 * those pressed while a frame was being made. */
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

/** A KeyboardEvent's key as livepuppet names it (livepuppet/live/keys.py: key_name). */
const KEY_NAMES = {ArrowLeft: 'left', ArrowRight: 'right', ArrowUp: 'up', ArrowDown: 'down', '=': '+', '_': '-',
  Escape: 'esc'};
const keyName = (key) => KEY_NAMES[key] || (key.length === 1 ? key.toLowerCase() : key);

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
    if (puppet.remote) {
      document.querySelector('.note').textContent = 'The generator runs on the server: only keypoints leave this '
        + 'page (the portrait once); the camera picture never does.';
    }
    Object.assign(document.body.dataset, {backend: runtime.accelerator, threads: runtime.threads,
      placement: JSON.stringify(puppet.placement)});
  }

  /** Buttons, drops and the keys of ``keys`` (keys.json: key name -> action id, and the help lines). */
  bind(keys) {
    $('calibrate').addEventListener('click', () => this.calibrate());
    $('keys').textContent = `keys: ${keys.help.map(([key, what]) => `${key} ${what}`).join(' · ')}`;
    document.addEventListener('keydown', (e) => {
      const action = ACTIONS[keys.actions[keyName(e.key)]];
      const duringFrame = this.puppet.busy;
      if (action && !e.ctrlKey && !e.metaKey && !e.altKey) {
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
    const {rgba: out, bitmap, calibrated} = await this.puppet.animate(rgba);
    if (out) {
      this.image.data.set(out);
      this.avatar.putImageData(this.image, 0, 0);
    } else if (bitmap) { // a server's frame; neither: it is away, the last frame stays
      this.avatar.drawImage(bitmap, 0, 0);
      bitmap.close();
    }
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
    const {keypoints = 0, process = 0, generate = 0, copies = 0, remote = 0} = this.puppet.timings;
    if (this.last) {
      const ms = now - this.last;
      this.fps = this.fps ? 0.9 * this.fps + 0.1 * (1000 / ms) : 1000 / ms;
      this.puppet.timings.page = Math.max(0, ms - keypoints - process - generate - copies - remote);
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

/** ?server=...: a maker of the RemoteGenerator for the page's model (web.json), or null to generate here. */
function remoteFromParams() {
  const server = params.get('server');
  if (!server) return null;
  return (manifest) => new RemoteGenerator(server, {
    token: params.get('token') || '', format: params.get('format') || 'jpeg',
    quality: Number(params.get('quality') || 90), size: manifest.frame_size, numKp: manifest.num_kp,
    modelId: manifest.model_id, onState: showMessage});
}

async function main() {
  if (params.get('view') === 'avatar') document.body.classList.add('avatar-only');
  let app;
  let keys;
  try {
    const options = {backend: params.get('backend') || 'auto', threads: params.get('threads') || 'auto'};
    const server = remoteFromParams();
    // Rendering here: the models in a Web Worker, so keys are answered while a frame renders. On a server:
    // only the keypoint models run here, on this thread (a few ms), and the generator there.
    const puppet = server ? await ServerPuppet.start({...options, makeRemote: server})
      : await WorkerPuppet.start(options);
    keys = await (await fetch('keys.json')).json();
    app = new App(puppet);
  } catch (e) {
    showMessage(params.get('server') ? `the page could not start with the server ${params.get('server')}: ${e.message}`
      : `the models could not start in this browser: ${e.message}`);
    $('backend').textContent = 'none';
    document.body.dataset.state = 'failed';
    return;
  }
  app.bind(keys);
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
