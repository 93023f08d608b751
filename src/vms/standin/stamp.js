// The capture time a stamped stand-in camera drew into a frame, read back in a browser.
// The same layout and decision as stamp.py (read that docstring): 10 x 5 cells of square
// blocks one block from the top-left corner, a white and a black reference cell, then 40 bits
// of Unix milliseconds (modulo 2**40) and their CRC-8, most significant bit first.
(() => {
  const COLS = 10, ROWS = 5, CELLS = COLS * ROWS, BITS = 40, MIN_CONTRAST = 64;
  const MOD = 2 ** BITS;

  function blockSize(width) { return 16 * Math.max(1, Math.floor(width / 640)); }

  function crc8(value) {
    // The 5 bytes of a 40-bit value, big-endian; >>> takes the low 32 bits of any number.
    const bytes = [Math.floor(value / 2 ** 32) & 0xff, (value >>> 24) & 0xff,
                   (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff];
    let crc = 0;
    for (const byte of bytes) {
      crc ^= byte;
      for (let i = 0; i < 8; i++) crc = crc & 0x80 ? ((crc << 1) ^ 0x07) & 0xff : (crc << 1) & 0xff;
    }
    return crc;
  }

  function decide(levels) {
    const white = levels[0], black = levels[1];
    if (white - black < MIN_CONTRAST) return null;
    const threshold = (white + black) / 2;
    let value = 0, crc = 0;
    for (let i = 2; i < 2 + BITS; i++) value = value * 2 + (levels[i] > threshold ? 1 : 0);
    for (let i = 2 + BITS; i < CELLS; i++) crc = (crc << 1) | (levels[i] > threshold ? 1 : 0);
    return crc8(value) === crc ? value : null;
  }

  let canvas = null, context = null;

  // The stamp of the frame the video element shows now (ms modulo 2**40), or null.
  function read(video) {
    const width = video.videoWidth, b = blockSize(width);
    const w = (COLS + 2) * b, h = (ROWS + 2) * b;
    if (!width || w > width || h > video.videoHeight) return null;
    if (canvas === null || canvas.width !== w || canvas.height !== h) {
      canvas = document.createElement('canvas');
      canvas.width = w; canvas.height = h;
      context = canvas.getContext('2d', {willReadFrequently: true});
    }
    context.drawImage(video, 0, 0, w, h, 0, 0, w, h);
    const px = context.getImageData(0, 0, w, h).data;
    const q = Math.floor(b / 4), levels = [];
    for (let cell = 0; cell < CELLS; cell++) {
      const x0 = (cell % COLS + 1) * b + q, y0 = (Math.floor(cell / COLS) + 1) * b + q;
      let total = 0;
      for (let y = y0; y < y0 + 2 * q; y++)
        for (let x = x0; x < x0 + 2 * q; x++) {
          const i = (y * w + x) * 4;
          total += 0.299 * px[i] + 0.587 * px[i + 1] + 0.114 * px[i + 2];
        }
      levels.push(total / (4 * q * q));
    }
    return decide(levels);
  }

  // The Unix time in ms that a stamp means: the one nearest nowMs.
  function captureMs(stamp, nowMs) {
    let back = ((nowMs - stamp) % MOD + MOD) % MOD;
    if (back > MOD / 2) back -= MOD;
    return nowMs - back;
  }

  window.vmsStamp = {read, captureMs, crc8};
})();
