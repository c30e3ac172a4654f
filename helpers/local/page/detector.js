// The detector in the page: the browser decodes the image, letterbox_kernel.c compiled to WebAssembly
// letterboxes and normalises it (the Lambda kernel's own source, so the same tensor bit for bit), ONNX
// Runtime Web runs the model (WASM, one thread) and the boxes go back to image pixels as
// helpers.runtime.postprocess maps them. Everything is loaded from this folder (python -m helpers web).
import * as ort from "./ort/ort.wasm.min.mjs";

const here = (name) => new URL(name, import.meta.url).href;
const align = (n) => Math.ceil(n / 16) * 16;

// np.rint and Python's round(): halves go to the even neighbour (Math.round takes them up).
export function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x - Math.trunc(x)) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

// helpers.runtime.resize.linear_taps (OpenCV's INTER_LINEAR tables) in the same float32 steps.
export function linearTaps(src, dst, clampWeights) {
  const scale = 1.0 / (dst / src);
  const taps = { i0: new Int32Array(dst), i1: new Int32Array(dst), w0: new Int32Array(dst), w1: new Int32Array(dst) };
  for (let d = 0; d < dst; d++) {
    const position = Math.fround((d + 0.5) * scale - 0.5);
    let index = Math.floor(position), frac = Math.fround(position - index);
    if (clampWeights && (index < 0 || index >= src - 1)) {
      frac = 0;
      index = index < 0 ? 0 : src - 1;
    }
    taps.w0[d] = roundHalfEven(Math.fround(Math.fround(1 - frac) * 2048));
    taps.w1[d] = roundHalfEven(Math.fround(frac * 2048));
    taps.i0[d] = Math.min(Math.max(index, 0), src - 1);
    taps.i1[d] = Math.min(Math.max(index + 1, 0), src - 1);
  }
  return taps;
}

// helpers.runtime.geometry.letterbox_geometry: LongestMaxSize + PadIfNeeded(center).
export function letterboxGeometry(height, width, size) {
  const scale = size / Math.max(height, width);
  const newHeight = Math.max(1, roundHalfEven(height * scale)), newWidth = Math.max(1, roundHalfEven(width * scale));
  return {
    origHeight: height, origWidth: width, newHeight, newWidth,
    padTop: Math.floor((size - newHeight) / 2), padLeft: Math.floor((size - newWidth) / 2),
  };
}

// helpers_letterbox in WebAssembly; its buffers are laid out in linear memory above __heap_base.
export class LetterboxKernel {
  static async load(url = here("letterbox_kernel.wasm")) {
    const { instance } = await WebAssembly.instantiate(await (await fetch(url)).arrayBuffer(), {});
    return new LetterboxKernel(instance.exports);
  }

  constructor(exports) { this.exports = exports; }

  // RGBA bytes (height x width, 4 per pixel: the kernel reads RGB through the pixel step) -> the
  // 1x3xSxS float32 model input.
  letterbox(rgba, height, width, geometry, size, normalise) {
    const { memory, helpers_letterbox: run, __heap_base: heapBase } = this.exports;
    const { newHeight: rows, newWidth: columns } = geometry;
    const x = linearTaps(width, columns, true), y = linearTaps(height, rows, false);
    let next = align(heapBase.value);
    const take = (bytes) => { const at = next; next = align(next + bytes); return at; };
    const at = {
      src: take(rgba.length), offsets0: take(columns * 8), offsets1: take(columns * 8),
      wx0: take(columns * 4), wx1: take(columns * 4), y0: take(rows * 4), y1: take(rows * 4),
      wy0: take(rows * 4), wy1: take(rows * 4), mean: take(12), denominator: take(12), pad: take(12),
      scratch: take(6 * columns * 2), out: take(3 * size * size * 4),
    };
    if (next > memory.buffer.byteLength) memory.grow(Math.ceil((next - memory.buffer.byteLength) / 65536));
    const buffer = memory.buffer;
    new Uint8Array(buffer, at.src, rgba.length).set(rgba);
    const offsets0 = new BigInt64Array(buffer, at.offsets0, columns), offsets1 = new BigInt64Array(buffer, at.offsets1, columns);
    for (let i = 0; i < columns; i++) {
      offsets0[i] = BigInt(x.i0[i] * 4);
      offsets1[i] = BigInt(x.i1[i] * 4);
    }
    const tables = { wx0: x.w0, wx1: x.w1, y0: y.i0, y1: y.i1, wy0: y.w0, wy1: y.w1 };
    for (const [name, values] of Object.entries(tables)) new Int32Array(buffer, at[name], values.length).set(values);
    for (const name of ["mean", "denominator", "pad"]) new Float32Array(buffer, at[name], 3).set(normalise[name]);
    run(
      at.src, BigInt(width * 4), 1n, at.offsets0, at.offsets1, at.wx0, at.wx1, at.y0, at.y1, at.wy0, at.wy1,
      rows, columns, size, geometry.padTop, geometry.padLeft, at.mean, at.denominator, at.pad, at.scratch, at.out,
    );
    return new Float32Array(buffer, at.out, 3 * size * size).slice();
  }
}

// The browser's decode, upright (EXIF orientation applied), no colour management (Pillow applies no
// ICC profile either) -> RGBA bytes. Partly transparent pixels are composited onto the pad colour in
// helpers.runtime.decode's float32 steps (exact only where the canvas kept the unpremultiplied values).
export async function decode(blob, padFill) {
  const options = { colorSpaceConversion: "none", premultiplyAlpha: "none", imageOrientation: "from-image" };
  const bitmap = await createImageBitmap(blob, options);
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  bitmap.close();
  const { data, width, height } = context.getImageData(0, 0, canvas.width, canvas.height);
  for (let i = 3; i < data.length; i += 4) {
    if (data[i] === 255) continue;
    const alpha = Math.fround(data[i] / 255), rest = Math.fround(1 - alpha);
    for (let c = 0; c < 3; c++) {
      const value = Math.fround(Math.fround(data[i - 3 + c] * alpha) + Math.fround(padFill[c] * rest));
      data[i - 3 + c] = roundHalfEven(value);
    }
  }
  return { rgba: data, width, height };
}

// helpers.runtime.postprocess.to_detections: at least `threshold`, best first (stable), boxes back in
// image pixels per axis, clipped, those with no area left dropped, at most `maxDetections`.
export function toDetections(boxes, scores, labels, geometry, threshold, maxDetections, classes) {
  const order = [...scores.keys()].filter((i) => scores[i] >= threshold).sort((a, b) => scores[b] - scores[a]);
  const { padLeft, padTop, origWidth: width, origHeight: height } = geometry;
  const scaleX = geometry.newWidth / width, scaleY = geometry.newHeight / height;
  const clip = (v, high) => Math.min(Math.max(v, 0), high);
  const found = [];
  for (const i of order) {
    if (found.length === maxDetections) break;
    const [x1, y1, x2, y2] = boxes.subarray(4 * i, 4 * i + 4);
    const box = [
      clip((x1 - padLeft) / scaleX, width), clip((y1 - padTop) / scaleY, height),
      clip((x2 - padLeft) / scaleX, width), clip((y2 - padTop) / scaleY, height),
    ];
    const label = Number(labels[i]);
    if (box[2] > box[0] && box[3] > box[1]) found.push({ label: label ? classes[label - 1] : "background", score: scores[i], box });
  }
  return found;
}

export class Detector {
  // The folder's config.json (the model's contract), its model in ONNX Runtime Web and the kernel.
  static async load() {
    const config = await (await fetch(here("config.json"))).json();
    ort.env.wasm.numThreads = 1; // no SharedArrayBuffer, so no cross-origin isolation: any static server
    ort.env.wasm.wasmPaths = here("ort/");
    const options = { executionProviders: ["wasm"], graphOptimizationLevel: "all" };
    const session = await ort.InferenceSession.create(here(config.model), options);
    return new Detector(config, session, await LetterboxKernel.load());
  }

  constructor(config, session, kernel) { Object.assign(this, { config, session, kernel }); }

  // Image file or blob -> {image, tensor, detections, timings_ms}; the tensor is kept for parity checks.
  async detect(blob, threshold, maxDetections = 100) {
    const { config } = this, size = config.image_size, t0 = performance.now();
    const image = await decode(blob, config.pad_fill);
    const t1 = performance.now();
    const geometry = letterboxGeometry(image.height, image.width, size);
    const tensor = this.kernel.letterbox(image.rgba, image.height, image.width, geometry, size, config.normalise);
    const t2 = performance.now();
    const input = new ort.Tensor("float32", tensor, [1, 3, size, size]);
    const outputs = await this.session.run({ [config.input_name]: input });
    const t3 = performance.now();
    const [boxes, scores, labels] = config.output_names.map((name) => outputs[name].data);
    const detections = toDetections(boxes, scores, labels, geometry, threshold, maxDetections, config.classes);
    const t4 = performance.now();
    const timings_ms = { decode: t1 - t0, letterbox: t2 - t1, inference: t3 - t2, postprocess: t4 - t3, total: t4 - t0 };
    return { image, tensor, detections, timings_ms };
  }
}
