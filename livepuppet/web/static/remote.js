// The generator on a `livepuppet serve` machine (?server=ws[s]://host:port): the page keeps the camera, the
// keypoints and their processing, and sends only the processed keypoints (protocol v1, docs/remote-protocol.md).
// One frame in flight; a lost connection is retried with backoff and the portrait sent again.

const VERSION = 1;
const KEYPOINTS = 0x01;
const PORTRAIT = 0x02;
const FRAME = 0x81;
const FORMATS = ['jpeg', 'png', 'raw'];
const FATAL = new Set([4401, 4403, 4426]); // wrong token, origin not allowed, another protocol: retrying cannot help
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function sha256Hex(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** One WebSocket and its messages, read in order by whoever awaits next(). */
class Link {
  constructor(ws) {
    this.ws = ws;
    this.queue = [];
    this.waiters = [];
    this.closed = null; // {code, reason} once closed
    ws.binaryType = 'arraybuffer';
    ws.onmessage = (e) => this._push({data: e.data});
    ws.onclose = (e) => {
      this.closed = {code: e.code, reason: e.reason};
      this._push({closed: this.closed});
    };
  }

  static open(url) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      const link = new Link(ws);
      ws.onopen = () => resolve(link);
      ws.onerror = () => reject(new Error(`cannot connect to ${url}`));
    });
  }

  _push(item) {
    const waiter = this.waiters.shift();
    if (waiter) waiter(item);
    else this.queue.push(item);
  }

  /** The next message: a string, an ArrayBuffer, or an Error for a closed connection (with the server's reason). */
  async next() {
    const item = this.queue.length ? this.queue.shift() : await new Promise((resolve) => this.waiters.push(resolve));
    if (item.closed) {
      this.queue.unshift(item);
      const error = new Error(item.closed.reason || `connection closed (${item.closed.code})`);
      error.fatal = FATAL.has(item.closed.code);
      throw error;
    }
    return item.data;
  }

  /** The next control message; an "error" from the server is thrown with its reason. */
  async control() {
    for (;;) {
      const data = await this.next();
      if (typeof data !== 'string') continue;
      const message = JSON.parse(data);
      if (message.type !== 'error') return message;
      const error = new Error(message.reason);
      error.fatal = FATAL.has(message.code);
      throw error;
    }
  }
}

export class RemoteGenerator {
  /** ``url``: ws[s]://host:port; ``size``: [h, w] and ``numKp`` of the page's model, checked against the server's. */
  constructor(url, {token = '', format = 'jpeg', quality = 90, size, numKp, modelId, onState = () => {}}) {
    if (!FORMATS.includes(format)) throw new Error(`unknown frame format "${format}": use jpeg, png or raw`);
    this.url = `${url.replace(/\/+$/, '')}/v1/session`;
    Object.assign(this, {token, format, quality, size, numKp, modelId, onState});
    this.link = null;
    this.welcome = null;
    this.portrait = null; // {digest, message}
    this.nextId = 1;
    this.timings = {remote: 0, server: 0};
  }

  /** Connect, say hello, check the model; then send the portrait again if there is one. */
  async connect() {
    const link = await Link.open(this.url);
    link.ws.send(JSON.stringify({type: 'hello', protocol: VERSION, token: this.token, format: this.format,
      quality: this.quality}));
    const welcome = await link.control();
    const {model} = welcome;
    if (model.num_kp !== this.numKp || model.frame_size.join() !== this.size.join()
        || (this.modelId && model.id !== this.modelId)) {
      link.ws.close();
      const error = new Error(`the server runs another model (${model.name}) than this page (its keypoints differ)`);
      error.fatal = true;
      throw error;
    }
    this.link = link;
    this.welcome = welcome;
    if (this.portrait) await this._upload();
    this.onState('');
  }

  /** Reconnect with backoff (0.25 s doubling to 2 s) until the server is back; a fatal refusal is thrown. */
  async reconnect() {
    for (let wait = 250; ; wait = Math.min(2 * wait, 2000)) {
      try {
        await this.connect();
        return;
      } catch (e) {
        if (e.fatal) throw e;
        this.onState(`server away (${e.message}): holding the last frame; reconnecting...`);
        await sleep(wait);
      }
    }
  }

  /** The portrait at the model's size, as RGBA pixels: sent as PNG, announced by its hash first. */
  async setSource(rgba) {
    const [h, w] = this.size;
    const canvas = new OffscreenCanvas(w, h);
    canvas.getContext('2d').putImageData(new ImageData(new Uint8ClampedArray(rgba), w, h), 0, 0);
    const png = new Uint8Array(await (await canvas.convertToBlob({type: 'image/png'})).arrayBuffer());
    const message = new Uint8Array(4 + png.length);
    message.set([PORTRAIT, 0, 0, 0]);
    message.set(png, 4);
    this.portrait = {digest: await sha256Hex(png), message};
    if (this.link && !this.link.closed) await this._upload();
  }

  async _upload() {
    const {digest, message} = this.portrait;
    this.link.ws.send(JSON.stringify({type: 'portrait', sha256: digest}));
    let reply = await this.link.control();
    if (reply.type === 'send') {
      this.link.ws.send(message);
      reply = await this.link.control();
    }
    if (reply.type !== 'ready') throw new Error(`the server answered the portrait with "${reply.type}"`);
  }

  /** Processed driving keypoints (value K*2, jacobian K*4 floats) -> the frame, as an ImageBitmap or ImageData. */
  async generate(value, jacobian) {
    if (!this.link || this.link.closed) await this.reconnect();
    const k = this.numKp;
    const id = this.nextId++;
    const buffer = new ArrayBuffer(8 + 24 * k);
    const view = new DataView(buffer);
    view.setUint8(0, KEYPOINTS);
    view.setUint16(2, k, true);
    view.setUint32(4, id, true);
    const floats = new Float32Array(buffer, 8);
    floats.set(value);
    floats.set(jacobian, 2 * k);
    const start = performance.now();
    try {
      this.link.ws.send(buffer);
      for (;;) {
        const data = await this.link.next();
        if (typeof data === 'string' || new DataView(data).getUint8(0) !== FRAME) continue;
        const header = new DataView(data);
        if (header.getUint32(4, true) < id) continue; // an older frame: the newest wins
        this.timings = {remote: performance.now() - start, server: header.getFloat32(8, true)};
        return await this._decode(header.getUint8(1), data.slice(12));
      }
    } catch (e) {
      if (e.fatal) throw e;
      this.onState(`server away (${e.message}): holding the last frame; reconnecting...`);
      return null; // the caller keeps the last frame; the next call reconnects
    }
  }

  async _decode(format, payload) {
    const [h, w] = this.size;
    if (FORMATS[format] === 'raw') {
      const rgb = new Uint8Array(payload);
      const rgba = new Uint8ClampedArray(w * h * 4).fill(255);
      for (let i = 0, j = 0; j < rgb.length; i += 4, j += 3) rgba.set(rgb.subarray(j, j + 3), i);
      return new ImageData(rgba, w, h);
    }
    return createImageBitmap(new Blob([payload], {type: `image/${FORMATS[format]}`}),
      {colorSpaceConversion: 'none', premultiplyAlpha: 'none'});
  }

  describe() {
    return `server ${this.url.replace(/\/v1\/session$/, '')}: ${this.welcome?.engine || '?'}`;
  }
}
