// ONNX Runtime peer of bench/compare (onnxruntime-node, CPU).
// node compare_ort.js MODEL.onnx {density|sample} BATCH N REPEATS THREADS IN.f32 OUT.bin C H W
// Prints one JSON line with the repeat times; writes log_p (float64) or x (float32).
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');

async function main() {
  const [model, mode, bS, nS, repS, thS, inp, out, cS, hS, wS] = process.argv.slice(2);
  const b = +bS, n = +nS, reps = +repS, threads = +thS, C = +cS, H = +hS, W = +wS;
  const D = C * H * W;
  const t0 = process.hrtime.bigint();
  const sess = await ort.InferenceSession.create(model, {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
  });
  const buf = fs.readFileSync(inp);
  const all = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
  const inName = sess.inputNames[0];
  const outName = sess.outputNames[0];
  const feed = (i, m) => {
    const data = all.slice(i * D, (i + m) * D);
    const dims = mode === 'density' ? [m, C, H, W] : [m, D];
    return { [inName]: new ort.Tensor('float32', data, dims) };
  };
  const setup = Number(process.hrtime.bigint() - t0) / 1e9;
  await sess.run(feed(0, b)); // warm-up
  const times = [];
  let outs = [];
  for (let r = 0; r < reps; r++) {
    outs = [];
    const t = process.hrtime.bigint();
    for (let i = 0; i < n; i += b) {
      const m = Math.min(b, n - i);
      const res = await sess.run(feed(i, m));
      outs.push(res[outName].data);
    }
    times.push(Number(process.hrtime.bigint() - t) / 1e9);
  }
  if (mode === 'density') {
    const lp = new Float64Array(n);
    let k = 0;
    for (const o of outs) for (const v of o) lp[k++] = v;
    fs.writeFileSync(out, Buffer.from(lp.buffer));
  } else {
    const xs = new Float32Array(n * D);
    let k = 0;
    for (const o of outs) { xs.set(o, k); k += o.length; }
    fs.writeFileSync(out, Buffer.from(xs.buffer));
  }
  const st = fs.readFileSync('/proc/self/status', 'utf8').match(/VmHWM:\s+(\d+)/);
  console.log(JSON.stringify({ times_s: times, setup_s: setup, vm_hwm_kib: st ? +st[1] : -1, ort_version: ort.env.versions ? ort.env.versions.common : null }));
}

main().catch((e) => { console.error('compare_ort: ' + e); process.exit(2); });
