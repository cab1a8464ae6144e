// BatchNorm (batch statistics) followed by ReLU, NHWC float32 with channels a multiple of 16, in four passes over
// the pixels where XLA:CPU made about nine of the same layer (batchnorm.py says how the four fit together):
//
//   statistics:           (sum x, sum x^2) per channel
//   apply:                y = max(x * a + b, 0)                       (a, b: scale and shift from the statistics)
//   gradient statistics:  (sum g, sum g * x) per channel              g = dy where x * a + b > 0, else 0
//   gradient:             dx = g * a + x * k2 + k3                    (k2, k3 per channel, from those sums)
//
// Sums run in float32 vectors over runs of 256 pixels and in double across runs. Called through XLA's FFI (native.py).
#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace {

namespace ffi = xla::ffi;

constexpr int kLanes = 16;
constexpr int64_t kRun = 256;
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float)), aligned(alignof(float))));

inline Vec Load(const float* p) { return *reinterpret_cast<const Vec*>(p); }
inline void Store(float* p, Vec v) { *reinterpret_cast<Vec*>(p) = v; }

// x * a + b > 0 ? v : 0, lane by lane
inline Vec WherePositive(Vec x, Vec a, Vec b, Vec v) { return x * a + b > 0 ? v : Vec{}; }

struct Pixels {
  int64_t count, channels;
};

ffi::Error Check(ffi::Buffer<ffi::F32>& x, Pixels& p) {
  const auto dims = x.dimensions();
  if (dims.size() == 0 || dims.back() % kLanes != 0)
    return ffi::Error::InvalidArgument("batchnorm_relu: the last axis (channels) must be a multiple of 16");
  p = {static_cast<int64_t>(x.element_count()) / dims.back(), dims.back()};
  return ffi::Error::Success();
}

// first[c] = sum over pixels of f(pixel, c).first, second[c] likewise; f returns two vectors for channels c .. c + 15.
template <typename F>
void SumPairs(const Pixels& p, float* first, float* second, F f) {
  std::vector<double> s(p.channels, 0.0), t(p.channels, 0.0);
  for (int64_t c = 0; c < p.channels; c += kLanes)
    for (int64_t run = 0; run < p.count; run += kRun) {
      Vec u = {}, v = {};
      for (int64_t i = run; i < std::min(p.count, run + kRun); ++i) {
        const auto [du, dv] = f(i * p.channels + c, c);
        u += du;
        v += dv;
      }
      for (int j = 0; j < kLanes; ++j) s[c + j] += u[j], t[c + j] += v[j];
    }
  std::copy(s.begin(), s.end(), first);
  std::copy(t.begin(), t.end(), second);
}

ffi::Error Statistics(ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> sum, ffi::ResultBuffer<ffi::F32> squares) {
  Pixels p;
  if (auto error = Check(x, p); error.failure()) return error;
  const float* xs = x.typed_data();
  SumPairs(p, sum->typed_data(), squares->typed_data(), [&](int64_t at, int64_t) {
    const Vec v = Load(xs + at);
    return std::pair{v, v * v};
  });
  return ffi::Error::Success();
}

ffi::Error Apply(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b,
                 ffi::ResultBuffer<ffi::F32> y) {
  Pixels p;
  if (auto error = Check(x, p); error.failure()) return error;
  const float *xs = x.typed_data(), *as = a.typed_data(), *bs = b.typed_data();
  float* ys = y->typed_data();
  for (int64_t i = 0; i < p.count; ++i)
    for (int64_t c = 0; c < p.channels; c += kLanes) {
      const Vec z = Load(xs + i * p.channels + c) * Load(as + c) + Load(bs + c);
      Store(ys + i * p.channels + c, z > 0 ? z : Vec{});
    }
  return ffi::Error::Success();
}

ffi::Error GradientStatistics(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> a,
                              ffi::Buffer<ffi::F32> b, ffi::ResultBuffer<ffi::F32> sum,
                              ffi::ResultBuffer<ffi::F32> times_x) {
  Pixels p;
  if (auto error = Check(x, p); error.failure()) return error;
  const float *xs = x.typed_data(), *gs = dy.typed_data(), *as = a.typed_data(), *bs = b.typed_data();
  SumPairs(p, sum->typed_data(), times_x->typed_data(), [&](int64_t at, int64_t c) {
    const Vec v = Load(xs + at);
    const Vec g = WherePositive(v, Load(as + c), Load(bs + c), Load(gs + at));
    return std::pair{g, g * v};
  });
  return ffi::Error::Success();
}

ffi::Error Gradient(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> a,
                    ffi::Buffer<ffi::F32> b, ffi::Buffer<ffi::F32> k2, ffi::Buffer<ffi::F32> k3,
                    ffi::ResultBuffer<ffi::F32> dx) {
  Pixels p;
  if (auto error = Check(x, p); error.failure()) return error;
  const float *xs = x.typed_data(), *gs = dy.typed_data(), *as = a.typed_data(), *bs = b.typed_data();
  float* out = dx->typed_data();
  for (int64_t i = 0; i < p.count; ++i)
    for (int64_t c = 0; c < p.channels; c += kLanes) {
      const int64_t at = i * p.channels + c;
      const Vec v = Load(xs + at), av = Load(as + c);
      const Vec g = WherePositive(v, av, Load(bs + c), Load(gs + at));
      Store(out + at, g * av + v * Load(k2.typed_data() + c) + Load(k3.typed_data() + c));
    }
  return ffi::Error::Success();
}

using Buffer = ffi::Buffer<ffi::F32>;
using Result = ffi::ResultBuffer<ffi::F32>;

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(StreetsegBatchnormReluStatistics, Statistics,
                              ffi::Ffi::Bind().Arg<Buffer>().Ret<Buffer>().Ret<Buffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(StreetsegBatchnormReluApply, Apply,
                              ffi::Ffi::Bind().Arg<Buffer>().Arg<Buffer>().Arg<Buffer>().Ret<Buffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(StreetsegBatchnormReluGradientStatistics, GradientStatistics,
                              ffi::Ffi::Bind()
                                  .Arg<Buffer>()
                                  .Arg<Buffer>()
                                  .Arg<Buffer>()
                                  .Arg<Buffer>()
                                  .Ret<Buffer>()
                                  .Ret<Buffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(StreetsegBatchnormReluGradient, Gradient,
                              ffi::Ffi::Bind()
                                  .Arg<Buffer>()
                                  .Arg<Buffer>()
                                  .Arg<Buffer>()
                                  .Arg<Buffer>()
                                  .Arg<Buffer>()
                                  .Arg<Buffer>()
                                  .Ret<Buffer>());
