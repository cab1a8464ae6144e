// The kernels of a 3x3, stride-1, zero-padded ("SAME") float32 convolution in NHWC / HWIO layout, where XLA:CPU's
// own are slow (conv.py says when each is used):
//
//   forward:          y[n, h, w, o]        = sum over i, j, c     of x[n, h + i - 1, w + j - 1, c] * k[i, j, c, o]
//   weight gradient:  dkernel[i, j, c, o]  = sum over n, h, w     of x[n, h + i - 1, w + j - 1, c] * dy[n, h, w, o]
//
// (x outside the image is zero). XLA:CPU computes the weight gradient as a convolution whose window is the whole
// feature map and whose "features" are the batch, after transposing both operands: 5-35 GFLOP/s on the U-Net's
// layers, where its forward convolution runs at about 140. Here it is an outer-product accumulation: a tile of input
// channels x output channels stays in vector registers while the pixels of a band of rows stream past, and the
// band (small enough to stay in the core's cache) is swept once per kernel tap and tile. The forward kernel (also
// the input gradient: the forward convolution of dy with the kernel turned round) keeps a tile of output pixels x
// output channels in registers while the 9 taps x input channels are added in: 147-169 GFLOP/s where XLA:CPU's
// runs at 126-150, and 16-60 on the narrow first layers.
//
// Called through XLA's FFI (see native.py, which compiles this file on first use for the machine it runs on).
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>

#include "xla/ffi/api/ffi.h"

namespace {

namespace ffi = xla::ffi;

constexpr int kLanes = 16;  // floats per vector; GCC and Clang lower this to what the target has (AVX-512: one)
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float)), aligned(alignof(float))));

struct Shape {
  int64_t n, h, w, c, o;
};

// Adds to d[c_tile x o_tile] (row stride o) the products of `rows` rows of x and dy, x shifted by dw columns.
template <int kIn, int kOut>
void Tile(const float* x, const float* dy, float* d, const Shape& s, int64_t rows, int64_t w0, int64_t w1,
          int64_t dw) {
  Vec acc[kIn][kOut];
  for (int i = 0; i < kIn; ++i)
    for (int j = 0; j < kOut; ++j) acc[i][j] = *reinterpret_cast<const Vec*>(d + i * s.o + kLanes * j);
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * s.w * s.c;
    const float* gr = dy + r * s.w * s.o;
    for (int64_t w = w0; w < w1; ++w) {
      const float* xp = xr + (w + dw) * s.c;
      Vec g[kOut];
      for (int j = 0; j < kOut; ++j) g[j] = *reinterpret_cast<const Vec*>(gr + w * s.o + kLanes * j);
      for (int i = 0; i < kIn; ++i) {
        const float xi = xp[i];
        for (int j = 0; j < kOut; ++j) acc[i][j] += xi * g[j];
      }
    }
  }
  for (int i = 0; i < kIn; ++i)
    for (int j = 0; j < kOut; ++j) *reinterpret_cast<Vec*>(d + i * s.o + kLanes * j) = acc[i][j];
}

// f(std::integral_constant<int, n>{}) for a count n in 1 .. kMax known only at run time: the tiles of the channels or
// pixels left over after the full ones.
template <int kMax, typename F>
void WithCount(int64_t n, F&& f) {
  if constexpr (kMax > 0) {
    if (n == kMax) return f(std::integral_constant<int, kMax>{});
    WithCount<kMax - 1>(n, f);
  }
}

// One kernel tap (dh, dw in -1..1) over a band of rows, every channel tile; columns w0 .. w1 - 1 of dy see x.
template <int kIn, int kOut>
void Tap(const float* x, const float* dy, float* d, const Shape& s, int64_t rows, int64_t w0, int64_t w1,
         int64_t dw) {
  for (int64_t o = 0; o < s.o; o += kOut * kLanes) {
    int64_t c = 0;
    for (; c + kIn <= s.c; c += kIn) Tile<kIn, kOut>(x + c, dy + o, d + c * s.o + o, s, rows, w0, w1, dw);
    WithCount<kIn - 1>(s.c - c, [&](auto left) {
      Tile<decltype(left)::value, kOut>(x + c, dy + o, d + c * s.o + o, s, rows, w0, w1, dw);
    });
  }
}

// Any channel count (o not a multiple of the vector width): plain loops.
void Scalar(const float* x, const float* dy, float* d, const Shape& s, int64_t rows, int64_t w0, int64_t w1,
            int64_t dw) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t w = w0; w < w1; ++w) {
      const float* xp = x + (r * s.w + w + dw) * s.c;
      const float* gp = dy + (r * s.w + w) * s.o;
      for (int64_t c = 0; c < s.c; ++c)
        for (int64_t o = 0; o < s.o; ++o) d[c * s.o + o] += xp[c] * gp[o];
    }
}

void WeightGradient(const float* x, const float* dy, float* dkernel, const Shape& s) {
  std::memset(dkernel, 0, sizeof(float) * 9 * s.c * s.o);
  // Bands of rows of about 256 KiB of x and dy: swept 9 times per channel tile, so they should stay in L2.
  const int64_t band = std::max<int64_t>(1, (int64_t{256} << 10) / (s.w * (s.c + s.o) * int64_t{sizeof(float)}));
  for (int64_t n = 0; n < s.n; ++n)
    for (int64_t h0 = 0; h0 < s.h; h0 += band) {
      const int64_t h1 = std::min(s.h, h0 + band);
      for (int64_t dh = -1; dh <= 1; ++dh) {
        // rows h of dy whose row h + dh of x is inside the image
        const int64_t a = std::max(h0, -dh), b = std::min(h1, s.h - dh);
        if (a >= b) continue;
        const float* xs = x + (n * s.h + a + dh) * s.w * s.c;
        const float* gs = dy + (n * s.h + a) * s.w * s.o;
        for (int64_t dw = -1; dw <= 1; ++dw) {
          float* d = dkernel + ((dh + 1) * 3 + dw + 1) * s.c * s.o;
          // columns w of dy whose column w + dw of x is inside the image
          const int64_t w0 = std::max<int64_t>(0, -dw), w1 = std::min(s.w, s.w - dw);
          if (s.o % (2 * kLanes) == 0) {
            Tap<8, 2>(xs, gs, d, s, b - a, w0, w1, dw);
          } else if (s.o % kLanes == 0) {
            Tap<16, 1>(xs, gs, d, s, b - a, w0, w1, dw);
          } else {
            Scalar(xs, gs, d, s, b - a, w0, w1, dw);
          }
        }
      }
    }
}

ffi::Error RunWeightGradient(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                             ffi::ResultBuffer<ffi::F32> dkernel) {
  const auto xs = x.dimensions(), gs = dy.dimensions(), ks = dkernel->dimensions();
  if (xs.size() != 4 || gs.size() != 4 || ks.size() != 4)
    return ffi::Error::InvalidArgument("conv3x3 weight gradient: x, dy and the kernel must be rank 4");
  const Shape s{xs[0], xs[1], xs[2], xs[3], gs[3]};
  if (gs[0] != s.n || gs[1] != s.h || gs[2] != s.w || ks[0] != 3 || ks[1] != 3 || ks[2] != s.c || ks[3] != s.o)
    return ffi::Error::InvalidArgument("conv3x3 weight gradient: shapes do not match (N,H,W,C), (N,H,W,O), (3,3,C,O)");
  WeightGradient(x.typed_data(), dy.typed_data(), dkernel->typed_data(), s);
  return ffi::Error::Success();
}

// The forward pass and the input gradient are the same loop: a forward convolution with a kernel packed per block of
// output channels (kBlocks vectors): packed[tap][c][kBlocks * kLanes], 64-byte aligned, swept once per block. The
// packing is where the input gradient's kernel is turned round (tap 8 - t) with its channels swapped.
struct Packed {
  float* data;
  explicit Packed(int64_t floats)
      : data(static_cast<float*>(std::aligned_alloc(64, (floats * sizeof(float) + 63) / 64 * 64))) {}
  Packed(const Packed&) = delete;
  Packed& operator=(const Packed&) = delete;
  ~Packed() { std::free(data); }
};

// kernel (3, 3, c, o) -> packed taps t of output channels o0 .. o0 + width - 1; `turned`: from the kernel
// (3, 3, o, c) of the convolution whose input gradient this is, tap 8 - t with the two channel axes swapped.
void Pack(const float* kernel, float* packed, const Shape& s, int64_t o0, int64_t width, bool turned) {
  for (int64_t t = 0; t < 9; ++t)
    for (int64_t c = 0; c < s.c; ++c) {
      float* to = packed + (t * s.c + c) * width;
      if (!turned) {
        std::memcpy(to, kernel + (t * s.c + c) * s.o + o0, width * sizeof(float));
      } else {
        const float* from = kernel + (8 - t) * s.o * s.c + o0 * s.c + c;
        for (int64_t o = 0; o < width; ++o) to[o] = from[o * s.c];
      }
    }
}

// Output pixels w0 .. w0 + kPixels - 1 of row (n, h), kBlocks vectors of output channels from o; every tap of these
// pixels lies inside the image along w (rows outside it are skipped).
template <int kPixels, int kBlocks>
void ForwardTile(const float* x, const float* k, float* y, const Shape& s, int64_t n, int64_t h, int64_t w0,
                 int64_t o) {
  constexpr int64_t kWidth = kBlocks * kLanes;
  Vec acc[kPixels][kBlocks] = {};
  for (int64_t dh = -1; dh <= 1; ++dh) {
    if (h + dh < 0 || h + dh >= s.h) continue;
    const float* xr = x + (n * s.h + h + dh) * s.w * s.c;
    for (int64_t dw = -1; dw <= 1; ++dw) {
      const float* xp = xr + (w0 + dw) * s.c;
      const float* kp = k + ((dh + 1) * 3 + dw + 1) * s.c * kWidth;
      for (int64_t c = 0; c < s.c; ++c) {
        Vec kv[kBlocks];
        for (int j = 0; j < kBlocks; ++j) kv[j] = *reinterpret_cast<const Vec*>(kp + c * kWidth + kLanes * j);
        for (int p = 0; p < kPixels; ++p) {
          const float xi = xp[p * s.c + c];
          for (int j = 0; j < kBlocks; ++j) acc[p][j] += xi * kv[j];
        }
      }
    }
  }
  float* yp = y + ((n * s.h + h) * s.w + w0) * s.o + o;
  for (int p = 0; p < kPixels; ++p)
    for (int j = 0; j < kBlocks; ++j) *reinterpret_cast<Vec*>(yp + p * s.o + kLanes * j) = acc[p][j];
}

// One output pixel anywhere (the image's first and last columns): taps outside the image are skipped.
template <int kBlocks>
void ForwardPixel(const float* x, const float* k, float* y, const Shape& s, int64_t n, int64_t h, int64_t w,
                  int64_t o) {
  constexpr int64_t kWidth = kBlocks * kLanes;
  Vec acc[kBlocks] = {};
  for (int64_t dh = -1; dh <= 1; ++dh) {
    if (h + dh < 0 || h + dh >= s.h) continue;
    for (int64_t dw = -1; dw <= 1; ++dw) {
      if (w + dw < 0 || w + dw >= s.w) continue;
      const float* xp = x + ((n * s.h + h + dh) * s.w + w + dw) * s.c;
      const float* kp = k + ((dh + 1) * 3 + dw + 1) * s.c * kWidth;
      for (int64_t c = 0; c < s.c; ++c)
        for (int j = 0; j < kBlocks; ++j) acc[j] += xp[c] * *reinterpret_cast<const Vec*>(kp + c * kWidth + kLanes * j);
    }
  }
  for (int j = 0; j < kBlocks; ++j)
    *reinterpret_cast<Vec*>(y + ((n * s.h + h) * s.w + w) * s.o + o + kLanes * j) = acc[j];
}

// Block by block of output channels: pack the block's kernel, then every row in tiles of kPixels pixels.
template <int kPixels, int kBlocks>
bool ForwardBlocks(const float* x, const float* kernel, float* y, const Shape& s, bool turned) {
  constexpr int64_t kWidth = kBlocks * kLanes;
  Packed packed(9 * s.c * kWidth);
  if (packed.data == nullptr) return false;
  for (int64_t o = 0; o < s.o; o += kWidth) {
    Pack(kernel, packed.data, s, o, kWidth, turned);
    for (int64_t n = 0; n < s.n; ++n)
      for (int64_t h = 0; h < s.h; ++h) {
        ForwardPixel<kBlocks>(x, packed.data, y, s, n, h, 0, o);
        int64_t w = 1;
        for (; w + kPixels < s.w; w += kPixels) ForwardTile<kPixels, kBlocks>(x, packed.data, y, s, n, h, w, o);
        WithCount<kPixels - 1>(s.w - 1 - w, [&](auto left) {
          ForwardTile<decltype(left)::value, kBlocks>(x, packed.data, y, s, n, h, w, o);
        });
        if (s.w > 1) ForwardPixel<kBlocks>(x, packed.data, y, s, n, h, s.w - 1, o);
      }
  }
  return true;
}

// s.o must be a multiple of kLanes (RunForward checks). Tiles of 24-28 accumulators: 6 pixels x 64 channels,
// 14 x 32 or 14 x 16.
bool Forward(const float* x, const float* kernel, float* y, const Shape& s, bool turned) {
  if (s.o % (4 * kLanes) == 0) return ForwardBlocks<6, 4>(x, kernel, y, s, turned);
  if (s.o % (2 * kLanes) == 0) return ForwardBlocks<14, 2>(x, kernel, y, s, turned);
  return ForwardBlocks<14, 1>(x, kernel, y, s, turned);
}

// y = the convolution of x with the kernel (3, 3, C, O), or with `turned`, dx = the input gradient of the
// convolution with the kernel (3, 3, C, O) (x is then dy, of O channels, and y is dx, of C).
ffi::Error RunForward(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> kernel, ffi::ResultBuffer<ffi::F32> y,
                      bool turned) {
  const char* name = turned ? "conv3x3 input gradient" : "conv3x3 forward";
  const auto xs = x.dimensions(), ks = kernel.dimensions(), ys = y->dimensions();
  if (xs.size() != 4 || ks.size() != 4 || ys.size() != 4)
    return ffi::Error::InvalidArgument(std::string(name) + ": both inputs and the result must be rank 4");
  const int64_t in = turned ? ks[3] : ks[2], out = turned ? ks[2] : ks[3];
  const Shape s{xs[0], xs[1], xs[2], xs[3], out};
  if (ks[0] != 3 || ks[1] != 3 || in != s.c || ys[0] != s.n || ys[1] != s.h || ys[2] != s.w || ys[3] != s.o)
    return ffi::Error::InvalidArgument(std::string(name) + ": shapes do not match the 3x3 kernel's channels");
  if (s.o % kLanes != 0)
    return ffi::Error::InvalidArgument(std::string(name) + ": the result's channels must be a multiple of 16");
  if (!Forward(x.typed_data(), kernel.typed_data(), y->typed_data(), s, turned))
    return ffi::Error(ffi::ErrorCode::kResourceExhausted, std::string(name) + ": out of memory packing the kernel");
  return ffi::Error::Success();
}

ffi::Error RunConvolution(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> kernel, ffi::ResultBuffer<ffi::F32> y) {
  return RunForward(x, kernel, y, false);
}

ffi::Error RunInputGradient(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> kernel,
                            ffi::ResultBuffer<ffi::F32> dx) {
  return RunForward(dy, kernel, dx, true);
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(StreetsegConv3x3Forward, RunConvolution,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(StreetsegConv3x3WeightGradient, RunWeightGradient,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(StreetsegConv3x3InputGradient, RunInputGradient,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
