// Copies the LiteRT.js runtime out of node_modules into the Python package
// (livepuppet/web/static/vendor/), so that `pip install` users need no npm.
// The WebAssembly builds are stored gzip-compressed (about 3.3x smaller);
// `livepuppet web` serves them with Content-Encoding: gzip and
// `livepuppet web --export` writes them out plain, for any static host.
// Run after `npm ci`:  node build.mjs
import {createHash} from 'node:crypto';
import {copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync} from 'node:fs';
import {dirname, join} from 'node:path';
import {fileURLToPath} from 'node:url';
import {gzipSync} from 'node:zlib';

const here = dirname(fileURLToPath(import.meta.url));
const modules = join(here, 'node_modules', '@litertjs');
const out = join(here, '..', 'livepuppet', 'web', 'static', 'vendor');

// Relaxed-SIMD single-thread, relaxed-SIMD threaded, the plain-SIMD build for browsers without
// relaxed SIMD, and the JSPI build: the page's WebGPU path, since a graph that WebGPU takes only in
// part runs its other ops on WebAssembly and reads GPU results back, which needs JSPI (single-thread).
const WASM = ['litert_wasm_internal', 'litert_wasm_threaded_internal', 'litert_wasm_compat_internal',
  'litert_wasm_jspi_internal'];

rmSync(out, {recursive: true, force: true});
mkdirSync(join(out, 'wasm'), {recursive: true});
// The core imports its helper by package name; the page's Web Worker has no import map, so it is
// pointed at the copy beside it.
const core = readFileSync(join(modules, 'core', 'dist', 'index.js'), 'utf8');
const helper = 'from "@litertjs/wasm-utils"';
if (!core.includes(helper)) throw new Error(`@litertjs/core no longer imports ${helper}: check build.mjs`);
writeFileSync(join(out, 'litertjs-core.js'), core.replace(helper, 'from "./litertjs-wasm-utils.js"'));
copyFileSync(join(modules, 'wasm-utils', 'dist', 'index.js'), join(out, 'litertjs-wasm-utils.js'));
const files = {};
for (const name of WASM) {
  copyFileSync(join(modules, 'core', 'wasm', `${name}.js`), join(out, 'wasm', `${name}.js`));
  const wasm = readFileSync(join(modules, 'core', 'wasm', `${name}.wasm`));
  writeFileSync(join(out, 'wasm', `${name}.wasm.gz`), gzipSync(wasm, {level: 9}));
  files[`${name}.wasm`] = {bytes: wasm.length, sha256: createHash('sha256').update(wasm).digest('hex')};
}
const version = JSON.parse(readFileSync(join(modules, 'core', 'package.json'), 'utf8')).version;
const packaged = readdirSync(out, {recursive: true}).map((name) => join(out, name))
  .filter((path) => statSync(path).isFile()).reduce((sum, path) => sum + statSync(path).size, 0);
const facts = {'@litertjs/core': version, license: 'Apache-2.0', packaged_bytes: packaged, wasm: files};
writeFileSync(join(out, 'VERSION.json'), JSON.stringify(facts, null, 1) + '\n');
console.log(`LiteRT.js ${version} -> ${out} (${(packaged / 1e6).toFixed(1)} MB as packaged, VERSION.json aside)`);
