// Where in the camera frame the model looks: the page's twin of livepuppet/live/framing.py.
// FOMM was trained on VoxCeleb crops, so a square around the face, eased and with a dead zone
// (a jittering crop shakes the whole avatar), plus manual zoom and pan on top. The face comes
// from the browser's own FaceDetector (Shape Detection API) where it has one; elsewhere the
// crop is the centre square, moved by hand.

export class Framer {
  constructor({enlarge = 1.8, smoothing = 0.3, deadZone = 0.05, detectEvery = 3} = {}) {
    Object.assign(this, {enlarge, smoothing, deadZone, detectEvery});
    this.zoom = 1;
    this.pan = [0, 0]; // in crop heights, so panning scales with zoom
    this.state = null; // eased [cx, cy, side]
    this.target = null;
    this.frameNo = 0;
    this.busy = false;
    this.detector = 'FaceDetector' in self ? new self.FaceDetector({fastMode: true, maxDetectedFaces: 1}) : null;
    this.tracking = this.detector !== null;
  }

  get trackingText() {
    if (!this.detector) return 'centre crop (this browser has no face detector): +/- zoom, arrows pan';
    return this.tracking ? (this.target ? 'following the face' : 'looking for a face') : 'face tracking off';
  }

  zoomBy(factor) { this.zoom = Math.min(6, Math.max(0.25, this.zoom * factor)); }
  panBy(dx, dy) { this.pan[0] += dx * 0.05; this.pan[1] += dy * 0.05; }
  resetView() { this.zoom = 1; this.pan = [0, 0]; }
  toggleTracking() { this.tracking = this.detector !== null && !this.tracking; this.state = this.target = null; }

  /** Start a face detection on this frame now and then; its result moves the target when it lands. */
  _detect(video) {
    if (!this.tracking || this.busy || this.frameNo++ % this.detectEvery) return;
    this.busy = true;
    this.detector.detect(video).then((faces) => {
      if (!faces.length) return;
      const b = faces[0].boundingBox;
      const t = [b.x + b.width / 2, b.y + b.height / 2 + 0.1 * b.height, b.height * this.enlarge];
      const moved = this.target && (Math.hypot(t[0] - this.target[0], t[1] - this.target[1])
        > this.deadZone * this.target[2] || Math.abs(t[2] - this.target[2]) > 2 * this.deadZone * this.target[2]);
      if (!this.target || moved) this.target = t;
      if (!this.state) this.state = [...t];
    }).catch(() => { this.detector = null; this.tracking = false; }).finally(() => { this.busy = false; });
  }

  /** The square crop {x, y, side} for this frame of a w x h video; advances tracking. */
  box(video, w, h) {
    const maxSide = Math.min(w, h);
    this._detect(video);
    if (this.state && this.target) {
      for (let i = 0; i < 3; i++) this.state[i] += this.smoothing * (this.target[i] - this.state[i]);
    }
    let [cx, cy, side] = this.state && this.tracking ? this.state : [w / 2, h / 2, maxSide];
    side = Math.min(Math.max(side / this.zoom, 16), maxSide);
    cx += this.pan[0] * side;
    cy += this.pan[1] * side;
    const x = Math.round(Math.min(Math.max(cx - side / 2, 0), w - side));
    const y = Math.round(Math.min(Math.max(cy - side / 2, 0), h - side));
    return {x, y, side: Math.round(side)};
  }
}
