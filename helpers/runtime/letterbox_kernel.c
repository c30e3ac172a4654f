/* The serving letterbox in one pass: OpenCV's uint8 INTER_LINEAR resize, the centred pad and
 * albumentations' Normalize, written straight into the model's 1x3xSxS float32 tensor.
 *
 * It does the same integer arithmetic as resize_linear() in resize.py and the same float32 arithmetic
 * as preprocess_numpy() in preprocess.py, with the same tap tables (resize.py computes them, kernel.py
 * passes them in), so its output is bit-identical to theirs and so to albumentations
 * (tests/test_preprocess.py checks all three). Built by helpers.build.native for the host (development) and for the Lambda's
 * architecture (the zip); where it is absent, preprocess.py runs the NumPy path. No libc calls and no
 * allocation: the caller passes a scratch buffer of 2 * 3 * new_width int16. One thread: at the
 * model's input size that is faster than splitting the rows between two (docs/decisions.md).
 *
 * Pixel (y, x) channel c is read at src + y * row_step + x * pixel_step + c * channel_step, in bytes and
 * 64-bit, with the steps of the NumPy array it comes from (any sign: flips, transposes, RGBX, grey
 * broadcast to three channels); the caller passes the x * pixel_step terms as the offsets tables.
 */
#include <stdint.h>

/* One source row through the horizontal pass, planar: out[c * new_width + x]. offsets0/1 are the two
 * taps' byte offsets from the row's first pixel. The sums fit 16 bits after the shift (at most
 * 255 * 2048 >> 4). */
static void horizontal(const uint8_t *row, int64_t channel_step, int new_width, const int64_t *offsets0,
                       const int64_t *offsets1, const int32_t *wx0, const int32_t *wx1, int16_t *out) {
    int16_t *r = out, *g = out + new_width, *b = out + 2 * new_width;
    for (int x = 0; x < new_width; x++) {
        const uint8_t *p0 = row + offsets0[x], *p1 = row + offsets1[x];
        int32_t w0 = wx0[x], w1 = wx1[x];
        r[x] = (int16_t)((p0[0] * w0 + p1[0] * w1) >> 4);
        g[x] = (int16_t)((p0[channel_step] * w0 + p1[channel_step] * w1) >> 4);
        b[x] = (int16_t)((p0[2 * channel_step] * w0 + p1[2 * channel_step] * w1) >> 4);
    }
}

static void fill(float *start, int count, float value) {
    for (int i = 0; i < count; i++) start[i] = value;
}

void helpers_letterbox(const uint8_t *src, int64_t row_step, int64_t channel_step, const int64_t *offsets0,
                      const int64_t *offsets1, const int32_t *wx0, const int32_t *wx1, const int32_t *y0,
                      const int32_t *y1, const int32_t *wy0, const int32_t *wy1, int new_height,
                      int new_width, int size, int top, int left, const float *mean,
                      const float *denominator, const float *pad, int16_t *scratch, float *out) {
    int16_t *rows[2] = {scratch, scratch + 3 * new_width};
    int64_t held[2] = {-1, -1}; /* the source row each scratch row holds */
    int64_t plane_size = (int64_t)size * size;
    for (int c = 0; c < 3; c++) { /* the pad rows above and below the image */
        float *plane = out + c * plane_size;
        fill(plane, top * size, pad[c]);
        fill(plane + (int64_t)(top + new_height) * size, (size - top - new_height) * size, pad[c]);
    }
    for (int y = 0; y < new_height; y++) {
        /* Each scratch row keeps its source row while the next output row still needs it. */
        int top_slot = held[0] == y0[y] ? 0 : held[1] == y0[y] ? 1 : -1;
        if (top_slot < 0) {
            top_slot = held[0] == y1[y] ? 1 : 0;
            horizontal(src + y0[y] * row_step, channel_step, new_width, offsets0, offsets1, wx0, wx1, rows[top_slot]);
            held[top_slot] = y0[y];
        }
        int bottom_slot = held[0] == y1[y] ? 0 : held[1] == y1[y] ? 1 : -1;
        if (bottom_slot < 0) {
            bottom_slot = 1 - top_slot;
            horizontal(src + y1[y] * row_step, channel_step, new_width, offsets0, offsets1, wx0, wx1, rows[bottom_slot]);
            held[bottom_slot] = y1[y];
        }
        const int16_t *pair[2] = {rows[top_slot], rows[bottom_slot]};
        int16_t b0 = (int16_t)wy0[y], b1 = (int16_t)wy1[y];
        for (int c = 0; c < 3; c++) {
            float *line = out + c * plane_size + (int64_t)(top + y) * size;
            const int16_t *h0 = pair[0] + c * new_width, *h1 = pair[1] + c * new_width;
            fill(line, left, pad[c]);
            fill(line + left + new_width, size - left - new_width, pad[c]);
            float m = mean[c], d = denominator[c];
            for (int x = 0; x < new_width; x++) {
                int32_t v = (int16_t)((h0[x] * b0) >> 16) + (int16_t)((h1[x] * b1) >> 16);
                line[left + x] = ((float)((v + 2) >> 2) - m) * d;
            }
        }
    }
}
