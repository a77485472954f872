// Runs one heap workload (heap32_device.py) on MicroPython's WebAssembly port
// under node: a 32-bit MicroPython, as on the ESP32.
// Usage: node heap32_wasm.mjs MICROPYTHON_MJS HEAP_BYTES HOST_DIR WORKLOAD
// HOST_DIR (the device's files, the inputs and heap32_device.mpy) is copied
// into the port's in-memory filesystem at /w, outside the Python heap.
import fs from "fs";
import path from "path";
import { pathToFileURL } from "url";

const [mjs, heap, hostDir, workload] = process.argv.slice(2);
const { loadMicroPython } = await import(pathToFileURL(mjs).href);
const mp = await loadMicroPython({
    heapsize: parseInt(heap, 10),
    stdout: (line) => process.stdout.write(line + "\n"),
    stderr: (line) => process.stderr.write(line + "\n"),
});

function copy(src, dst) {
    mp.FS.mkdir(dst);
    for (const e of fs.readdirSync(src, { withFileTypes: true })) {
        const s = path.join(src, e.name), d = dst + "/" + e.name;
        if (e.isDirectory()) copy(s, d);
        else mp.FS.writeFile(d, fs.readFileSync(s));
    }
}
copy(hostDir, "/w");
try {
    mp.runPython(`import sys\nsys.path.insert(0, "/w")\nimport heap32_device\nheap32_device.begin(${JSON.stringify(workload)}, "/w")\n`);
    // One call from JavaScript per step: the port collects between them.
    const device = mp.pyimport("heap32_device");
    while (device.step()) { /* next step */ }
} catch (e) {
    process.stdout.write("HEAP32 FAIL " + String(e).split("\n").slice(-2).join(" ") + "\n");
    process.exit(1);
}
